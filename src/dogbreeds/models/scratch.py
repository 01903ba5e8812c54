"""The custom CNN trained from scratch: its typed settings (params ``train_scratch``).

The ``tune`` stage reads them too: its search varies the architecture and keeps the rest
(input size, pooling, online augmentation, early stopping) from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras

from dogbreeds.models.builders import build_scratch_cnn
from dogbreeds.models.fit import CHECKPOINTS, BaseSettings
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
        online_augmentation: Keras preprocessing layers' settings, or null for none.
        seed: ``base.seed``.
    """

    image_size: int
    epochs: int
    batch_size: int
    learning_rate: float
    use_augmented: bool
    blocks: list
    pooling: Literal["avg", "max", "flatten"]
    dense: tuple[int, ...]
    dropout: float
    online_augmentation: dict | None
    early_stopping_patience: int
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
                "augmentation": self.online_augmentation}

    def build_model(self, num_classes: int) -> keras.Model:
        """The compiled CNN these settings describe (build it inside a strategy's scope)."""
        return build_scratch_cnn(num_classes, self.image_size, blocks=self.blocks,
                                 dense=list(self.dense), dropout=self.dropout,
                                 learning_rate=self.learning_rate, pooling=self.pooling,
                                 augmentation=self.online_augmentation, seed=self.seed)


@dataclass(frozen=True)
class _ImageSize:
    image_size: int | None


@dataclass(frozen=True)
class _DataImageSize:
    image_size: int
