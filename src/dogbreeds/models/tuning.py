"""What the CNN hyperparameter search explores: its settings, space and hypermodel.

The hypermodel declares the search space (number of conv blocks, filters per block, kernel
size, dense units, dropout, learning rate, and the recipe's knobs: weight decay, label
smoothing, block type) and builds the model with the hand-set CNN's recipe
(:class:`~dogbreeds.models.scratch.ScratchSettings`: its learning-rate schedule, input size,
pooling, online augmentation) through :func:`dogbreeds.models.builders.build_scratch_cnn`, so
the tuned model differs only by its hyperparameters. keras-tuner keeps its state in a project
directory whose name hashes the search configuration (:func:`project_name`), so a killed
search resumes its finished trials while a changed search space starts afresh. Running the
search, one nested MLflow run per trial, is :mod:`dogbreeds.models.tuners`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt

from dogbreeds.hashing import fingerprint
from dogbreeds.models import builders
from dogbreeds.models.fit import CHECKPOINTS, BaseSettings
from dogbreeds.models.scratch import ScratchSettings
from dogbreeds.settings import from_section, section

STAGE = "tune"
# keras-tuner's own bookkeeping values (Hyperband's bracket, round, epochs, parent trial):
# not hyperparameters of the model.
TUNER_PREFIX = "tuner/"


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the CNN search (``tune.search_space`` in params.yaml).

    Attributes:
        blocks: (min, max) number of conv blocks.
        filters: choices of filters, drawn independently for each block.
        kernel: choices of kernel size, one for the whole network.
        dense: choices of units of the single dense layer of the head.
        dropout: (min, max) dropout before the classifier.
        learning_rate: (min, max) peak learning rate, sampled on a log scale.
        weight_decay: (min, max) AdamW weight decay (0 allowed: plain Adam).
        label_smoothing: (min, max).
        block_type: choices of conv block (``plain``, ``residual``, ``separable``).
    """

    blocks: tuple[int, int]
    filters: tuple[int, ...]
    kernel: tuple[int, ...]
    dense: tuple[int, ...]
    dropout: tuple[float, float]
    learning_rate: tuple[float, float]
    weight_decay: tuple[float, float]
    label_smoothing: tuple[float, float]
    block_type: tuple[str, ...]

    @classmethod
    def from_params(cls, space: Mapping[str, Any]) -> SearchSpace:
        """Validate and convert the params.yaml mapping.

        Raises:
            ValueError: when a key is missing or a range/choice list is not usable.
        """
        missing = {f for f in cls.__dataclass_fields__} - set(space)
        if missing:
            raise ValueError(f"tune.search_space lacks {sorted(missing)}")
        blocks = _int_range("blocks", space["blocks"])
        if blocks[0] < 1:
            raise ValueError(f"tune.search_space.blocks must be >= 1, got {list(blocks)}")
        dropout = _float_range("dropout", space["dropout"])
        if not (0.0 <= dropout[0] and dropout[1] < 1.0):
            raise ValueError(f"tune.search_space.dropout must lie in [0, 1), got {list(dropout)}")
        learning_rate = _float_range("learning_rate", space["learning_rate"])
        if learning_rate[0] <= 0.0:
            raise ValueError("tune.search_space.learning_rate must be > 0 (log scale), "
                             f"got {list(learning_rate)}")
        weight_decay = _float_range("weight_decay", space["weight_decay"])
        smoothing = _float_range("label_smoothing", space["label_smoothing"])
        if weight_decay[0] < 0.0 or not (0.0 <= smoothing[0] and smoothing[1] < 1.0):
            raise ValueError("tune.search_space: weight_decay must be >= 0 and label_smoothing "
                             f"in [0, 1), got {list(weight_decay)} and {list(smoothing)}")
        return cls(
            blocks=blocks,
            filters=_choices("filters", space["filters"]),
            kernel=_choices("kernel", space["kernel"]),
            dense=_choices("dense", space["dense"]),
            dropout=dropout,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            label_smoothing=smoothing,
            block_type=_names("block_type", space["block_type"], builders.BLOCK_TYPES),
        )


def _int_range(name: str, value: Any) -> tuple[int, int]:
    if not isinstance(value, Sequence) or len(value) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"tune.search_space.{name} must be [min, max] integers, got {value!r}")
    low, high = value
    if low > high:
        raise ValueError(f"tune.search_space.{name}: min {low} > max {high}")
    return low, high


def _float_range(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, Sequence) or len(value) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"tune.search_space.{name} must be [min, max] numbers, got {value!r}")
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise ValueError(f"tune.search_space.{name}: min {low} > max {high}")
    return low, high


def _choices(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ValueError(
            f"tune.search_space.{name} must be a non-empty list of positive integers, "
            f"got {value!r}")
    return tuple(dict.fromkeys(value))  # unique, order kept (keras-tuner rejects duplicates)


def _names(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or any(v not in allowed for v in value):
        raise ValueError(f"tune.search_space.{name} must be a non-empty list of {allowed}, "
                         f"got {value!r}")
    return tuple(dict.fromkeys(value))


def _float_hp(hp: kt.HyperParameters, name: str, bounds: tuple[float, float],
              sampling: str = "linear", default: float | None = None) -> float:
    low, high = bounds
    if low == high:  # a range collapsed to one value is a fixed hyperparameter
        return hp.Fixed(name, low)
    return hp.Float(name, low, high, sampling=sampling, default=default)


def hand_set_values(recipe: ScratchSettings, space: SearchSpace
                    ) -> tuple[dict[str, Any], list[str]]:
    """The hand-set CNN (``train_scratch``) as values of the search space, and the names of
    the settings the space cannot express (those keep keras-tuner's own defaults).

    They become the hyperparameters' defaults, which the search's first trial takes
    (:class:`dogbreeds.models.tuners.HandSetFirst`): the search starts from the design it
    has to beat.
    """
    values: dict[str, Any] = {}
    outside: list[str] = []

    def offer(name: str, value: Any, fits: bool) -> None:
        if fits:
            values[name] = value
        else:
            outside.append(f"{name}={value!r}")

    blocks = list(recipe.blocks)
    offer("blocks", len(blocks), space.blocks[0] <= len(blocks) <= space.blocks[1])
    kernels = {int(b["kernel"]) for b in blocks}
    kernel = next(iter(kernels)) if len(kernels) == 1 else sorted(kernels)
    offer("kernel", kernel, len(kernels) == 1 and kernel in space.kernel)
    for i, block in enumerate(blocks[:space.blocks[1]]):
        offer(f"filters_{i}", int(block["filters"]), int(block["filters"]) in space.filters)
    dense = list(recipe.dense)
    offer("dense", dense[0] if len(dense) == 1 else dense,
          len(dense) == 1 and dense[0] in space.dense)
    for name, bounds in (("dropout", space.dropout), ("learning_rate", space.learning_rate),
                         ("weight_decay", space.weight_decay),
                         ("label_smoothing", space.label_smoothing)):
        value = float(getattr(recipe, name))
        offer(name, value, bounds[0] <= value <= bounds[1])
    offer("block_type", recipe.block_type, recipe.block_type in space.block_type)
    return values, outside


def declare_architecture(hp: kt.HyperParameters, space: SearchSpace,
                         defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Declare the search space on ``hp`` and return this trial's architecture.

    ``filters_<i>`` is conditional on ``blocks`` > i, so searches (Bayesian optimisation in
    particular) don't waste effort on filters of blocks the model doesn't have.
    ``defaults`` (e.g. :func:`hand_set_values`) are the hyperparameters' default values.

    Returns:
        ``blocks`` (list of ``{"filters", "kernel"}``), ``dense`` (list of units),
        ``dropout``, ``learning_rate`` (the peak of the schedule), ``weight_decay``,
        ``label_smoothing`` and ``block_type``: the keyword arguments of
        :func:`dogbreeds.models.builders.build_scratch_cnn` that the search controls.
    """
    default = dict(defaults or {}).get
    low, high = space.blocks
    n_blocks = (hp.Int("blocks", low, high, default=default("blocks")) if low < high
                else hp.Fixed("blocks", low))
    kernel = hp.Choice("kernel", list(space.kernel), default=default("kernel"))
    filters = []
    for i in range(high):
        with hp.conditional_scope("blocks", list(range(i + 1, high + 1))):
            filters.append(hp.Choice(f"filters_{i}", list(space.filters),
                                     default=default(f"filters_{i}")))
    return {
        "blocks": [{"filters": int(f), "kernel": int(kernel)} for f in filters[:n_blocks]],
        "dense": [int(hp.Choice("dense", list(space.dense), default=default("dense")))],
        "dropout": float(_float_hp(hp, "dropout", space.dropout,
                                   default=default("dropout"))),
        "learning_rate": float(_float_hp(hp, "learning_rate", space.learning_rate, "log",
                                         default=default("learning_rate"))),
        "weight_decay": float(_float_hp(hp, "weight_decay", space.weight_decay,
                                        default=default("weight_decay"))),
        "label_smoothing": float(_float_hp(hp, "label_smoothing", space.label_smoothing,
                                           default=default("label_smoothing"))),
        "block_type": str(hp.Choice("block_type", list(space.block_type),
                                    default=default("block_type"))),
    }


def architecture_from_values(values: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The architecture (see :func:`declare_architecture`) of a set of hyperparameter values."""
    hp = kt.HyperParameters()
    declare_architecture(hp, space)  # registers the space; values fall back to defaults
    hp.values.update({k: v for k, v in values.items() if not k.startswith(TUNER_PREFIX)})
    return declare_architecture(hp, space)


class ScratchCNNHyperModel(kt.HyperModel):
    """Builds :func:`dogbreeds.models.builders.build_scratch_cnn` from a trial's hyperparameters.

    Everything the search does not control (input size, pooling, online augmentation, the
    learning-rate schedule's shape, seed) comes from the hand-set CNN's settings ``recipe``.
    The schedule spans ``epochs`` × ``steps_per_epoch``: a trial's budget, or the final
    training's (:meth:`for_epochs`).
    """

    def __init__(self, space: SearchSpace, num_classes: int, recipe: ScratchSettings, *,
                 epochs: int, steps_per_epoch: int) -> None:
        super().__init__(name="scratch_cnn", tunable=True)
        self.space = space
        self.num_classes = num_classes
        self.recipe = recipe
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.defaults, self.outside_space = hand_set_values(recipe, space)

    @property
    def image_size(self) -> int:
        return self.recipe.image_size

    def for_epochs(self, epochs: int) -> ScratchCNNHyperModel:
        """The same hypermodel with a schedule spanning ``epochs`` instead."""
        return ScratchCNNHyperModel(self.space, self.num_classes, self.recipe, epochs=epochs,
                                    steps_per_epoch=self.steps_per_epoch)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        arch = declare_architecture(hp, self.space, self.defaults)
        rate = self.recipe.learning_rate_schedule(arch.pop("learning_rate"), self.epochs,
                                                  self.steps_per_epoch)
        return builders.build_scratch_cnn(
            self.num_classes, self.recipe.image_size, **arch, learning_rate=rate,
            pooling=self.recipe.pooling, augmentation=self.recipe.online_augmentation,
            seed=self.recipe.seed)


@dataclass(frozen=True)
class TuneSettings:
    """The ``tune`` params section.

    Attributes:
        algorithm: ``random``, ``hyperband`` or ``bayesian``
            (checked by :func:`dogbreeds.models.tuners.make_tuner`).
        max_trials: trial budget, whatever the algorithm.
        epochs: per trial (hyperband: its max epochs).
        batch_size: per replica.
        final_epochs: the final training of the best configuration (``scratch_tuned``),
            continuing from the best trial's weights with a fresh warm-up and schedule.
        output: the ``scratch_tuned`` model folder.
        search_space: the bounds of the search (``tune.search_space``).
        seed: ``base.seed``.
    """

    algorithm: str
    max_trials: int
    epochs: int
    batch_size: int
    final_epochs: int
    output: Path
    search_space: SearchSpace
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TuneSettings:
        space = SearchSpace.from_params(section(params, "tune.search_space"))
        return from_section(cls, section(params, STAGE), STAGE, search_space=space,
                            seed=BaseSettings.from_params(params).seed)

    @property
    def tuner_dir(self) -> Path:
        """Where keras-tuner keeps its projects (relative to the project root)."""
        return CHECKPOINTS / STAGE

    @property
    def retrain_checkpoint_dir(self) -> Path:
        """Resume backup of the best configuration's final training."""
        return CHECKPOINTS / "scratch_tuned"

    def project(self, scratch: ScratchSettings, *, batch_size: int, classes: list[str],
                data_key: str) -> str:
        """The keras-tuner project of this search (see :func:`project_name`).

        Args:
            batch_size: the global batch of every trial.
            data_key: fingerprint of the train and val data.
        """
        return project_name(self.algorithm, {
            "search_space": dataclasses.asdict(self.search_space), "epochs": self.epochs,
            "batch_size": batch_size, "seed": self.seed, "model": scratch.fixed,
            "classes": classes, "data": data_key,
            "first_trial": hand_set_values(scratch, self.search_space)[0],
        })


def project_name(algorithm: str, config: Mapping[str, Any]) -> str:
    """``<algorithm>-<hash>``: the same search configuration maps to the same project.

    ``config`` should hold everything a finished trial's result depends on (search space,
    epochs, batch size, seed, fixed model settings, the data), and not the trial budget,
    so raising ``max_trials`` continues a search instead of restarting it.
    """
    return f"{algorithm}-{fingerprint({'algorithm': algorithm, **config}, 12)}"
