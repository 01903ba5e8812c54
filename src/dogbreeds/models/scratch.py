"""The custom CNN trained from scratch: its typed settings (params ``train_scratch``).

The ``tune`` stage reads them too: its search varies the architecture and the recipe's knobs
(learning rate, weight decay, label smoothing, block type) and keeps the rest (input size,
pooling, online augmentation, learning-rate schedule, early stopping) from here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras

from dogbreeds.models.builders import build_scratch_cnn, warmup_cosine
from dogbreeds.models.fit import CHECKPOINTS, BaseSettings, PreciseBatchNorm
from dogbreeds.settings import from_section, section

STAGE = "train_scratch"


@dataclass(frozen=True)
class ScratchSettings:
    """The ``train_scratch`` params section, with ``image_size`` resolved.

    Attributes:
        image_size: input side; ``train_scratch.image_size: null`` falls back to
            ``data.image_size`` (:meth:`from_params`, the one place that does).
        batch_size: per replica (:func:`dogbreeds.models.distribute.global_batch_size`).
        blocks: one ``{"filters", "kernel"}`` mapping per conv block.
        learning_rate: the peak rate (reached after the warm-up with ``schedule: cosine``).
        schedule: ``constant`` or ``cosine`` (linear warm-up over ``warmup_epochs``, then
            cosine decay to 0 at the last epoch: :func:`~dogbreeds.models.builders.warmup_cosine`).
        weight_decay: AdamW's decoupled weight decay; 0 trains with plain Adam.
        label_smoothing: share of the target spread over all classes (0: none).
        block_type: ``plain``, ``residual`` or ``separable`` conv blocks.
        online_augmentation: Keras preprocessing layers' settings, or null for none.
        early_stopping_smoothing: weight of the past in the exponential moving average of
            val_loss that early stopping watches (0: the raw val_loss).
        precise_bn_batches: clean training batches the BatchNorm statistics are re-estimated
            on before every validation (:class:`~dogbreeds.models.fit.PreciseBatchNorm`;
            0: Keras' moving averages).
        seed: ``base.seed``.
    """

    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: Literal["constant", "cosine"]
    warmup_epochs: float
    weight_decay: float
    label_smoothing: float
    use_augmented: bool
    block_type: Literal["plain", "residual", "separable"]
    blocks: list
    pooling: Literal["avg", "max", "flatten"]
    dense: tuple[int, ...]
    dropout: float
    online_augmentation: dict | None
    early_stopping_patience: int
    early_stopping_smoothing: float
    precise_bn_batches: int
    output: Path
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ScratchSettings:
        cfg = section(params, STAGE)
        image_size = from_section(_ImageSize, cfg, STAGE).image_size
        if image_size is None:
            image_size = from_section(_DataImageSize, section(params, "data"), "data").image_size
        return from_section(cls, cfg, STAGE, image_size=image_size,
                            seed=BaseSettings.from_params(params).seed)

    @property
    def checkpoint_dir(self) -> Path:
        """Resume backup and epoch log of ``train_scratch`` (relative to the project root)."""
        return CHECKPOINTS / "scratch"

    @property
    def fixed(self) -> dict[str, Any]:
        """What a tuning search keeps from these settings (recorded with its result)."""
        return {"image_size": self.image_size, "pooling": self.pooling,
                "augmentation": self.online_augmentation, "schedule": self.schedule,
                "warmup_epochs": self.warmup_epochs, "precise_bn_batches": self.precise_bn_batches}

    def learning_rate_schedule(self, learning_rate: float, epochs: int, steps_per_epoch: int):
        """The optimizer's learning rate for a training of ``epochs`` × ``steps_per_epoch``.

        A warm-up never takes more than half the steps: a 2-epoch tuning trial still
        decays.
        """
        if self.schedule == "constant":
            return float(learning_rate)
        total = max(1, int(epochs) * int(steps_per_epoch))
        warmup = min(int(round(self.warmup_epochs * steps_per_epoch)), total // 2)
        return warmup_cosine(learning_rate, total, warmup)

    def batchnorm_callbacks(self, clean_train) -> list[keras.callbacks.Callback]:
        """The fit callbacks of ``precise_bn_batches`` (none when 0).

        Args:
            clean_train: shuffled batches of the un-augmented training photos
                (:func:`dogbreeds.data.datasets.clean_training_dataset`).
        """
        if self.precise_bn_batches <= 0:
            return []
        return [PreciseBatchNorm(clean_train, self.precise_bn_batches)]

    def build_model(self, num_classes: int, steps_per_epoch: int) -> keras.Model:
        """The compiled CNN these settings describe (build it inside a strategy's scope).

        Args:
            steps_per_epoch: optimizer steps per epoch (:func:`steps_per_epoch`), which the
                learning-rate schedule spans ``epochs`` times.
        """
        return build_scratch_cnn(
            num_classes, self.image_size, blocks=self.blocks, dense=list(self.dense),
            dropout=self.dropout,
            learning_rate=self.learning_rate_schedule(self.learning_rate, self.epochs,
                                                      steps_per_epoch),
            pooling=self.pooling, augmentation=self.online_augmentation, seed=self.seed,
            block_type=self.block_type, weight_decay=self.weight_decay,
            label_smoothing=self.label_smoothing)


def steps_per_epoch(n_images: int, global_batch_size: int) -> int:
    """Optimizer steps in one pass over ``n_images`` (the last batch may be partial)."""
    return max(1, math.ceil(int(n_images) / int(global_batch_size)))


@dataclass(frozen=True)
class _ImageSize:
    image_size: int | None


@dataclass(frozen=True)
class _DataImageSize:
    image_size: int
