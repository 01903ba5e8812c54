"""Transfer learning: a head on the cached backbone features, optionally fine-tuned.

:class:`TransferSettings` is the ``train_transfer`` params section for one backbone (where
its feature cache, model folder and checkpoints live); :func:`train_transfer` trains in two
phases and records the model like every other (:func:`dogbreeds.models.record.record_model`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import tensorflow as tf

from dogbreeds.data.datasets import array_dataset, frames_fingerprint, make_dataset
from dogbreeds.models.backbones import find_backbone
from dogbreeds.models.builders import (
    build_head,
    build_transfer_model,
    compile_classifier,
    unfreeze_top,
)
from dogbreeds.models.distribute import global_batch_size
from dogbreeds.models.features import FeatureCache
from dogbreeds.models.fit import CHECKPOINTS, BaseSettings, seed_everything
from dogbreeds.models.multiworker import fit_model
from dogbreeds.models.record import record_model
from dogbreeds.settings import from_section, section

STAGE = "train_transfer"


@dataclass(frozen=True)
class TransferSettings:
    """The ``train_transfer`` params section, for one backbone.

    Batch sizes are per replica (:func:`dogbreeds.models.distribute.global_batch_size`).
    ``head_batch_size`` counts feature vectors: vectors are tiny, and with a few thousand of
    them the head's per-step overhead, not its arithmetic, is what a small batch pays for
    (256 trains the head ~2x faster than 32, ``benchmarks.transfer_cache``). A big batch
    means few optimizer steps per epoch, so the head's budget is ``head_steps`` optimizer
    steps (:func:`head_epochs`), whatever the batch and data size; None: ``epochs``.

    ``test_time_flip``: the assembled model averages the backbone features of the photo and
    of its mirror image (:func:`dogbreeds.models.builders.build_transfer_model`); the head
    is then validated on the averaged cached views. With a cache holding mirror-image views
    (``flip_views``) the head trains on both views of every training photo.
    """

    backbone: str
    seed: int
    dense: tuple[int, ...]
    dropout: float
    pooling: Literal["avg", "max", "flatten"]
    learning_rate: float
    epochs: int
    head_steps: int | None
    batch_size: int
    head_batch_size: int
    test_time_flip: bool
    early_stopping_patience: int
    fine_tune_layers: int
    fine_tune_epochs: int
    fine_tune_learning_rate: float
    use_augmented: bool
    features_dir: Path
    output: Path

    @classmethod
    def from_params(cls, params: Mapping[str, Any], backbone: str) -> TransferSettings:
        return from_section(cls, section(params, STAGE), STAGE, backbone=backbone,
                            seed=BaseSettings.from_params(params).seed)

    @property
    def cache_dir(self) -> Path:
        """The backbone's feature cache (written by ``features@<backbone>``)."""
        return self.features_dir / self.backbone

    @property
    def model_dir(self) -> Path:
        return self.output / self.backbone

    @property
    def checkpoint_dir(self) -> Path:
        return CHECKPOINTS / self.backbone

    @property
    def fine_tunes(self) -> bool:
        """Whether phase 2 runs (and so needs the images)."""
        return self.fine_tune_layers > 0 and self.fine_tune_epochs > 0


def head_epochs(n_vectors: int, batch_size: int, steps: int | None, epochs: int) -> int:
    """Epochs that give the head ``steps`` optimizer steps over ``n_vectors`` vectors in
    batches of ``batch_size`` (at least that many; ``epochs`` when ``steps`` is None)."""
    if steps is None:
        return epochs
    if steps < 1 or batch_size < 1:
        raise ValueError(f"head_steps and head_batch_size must be >= 1, got {steps}, {batch_size}")
    return max(1, math.ceil(steps / max(1, math.ceil(n_vectors / batch_size))))


def head_data(cache: FeatureCache, split: str, test_time_flip: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(features, labels)`` the head trains (``train``) or is validated (else) on.

    Training uses both views when the cache holds mirror images (twice the rows); other
    splits see what the assembled model computes: the mean of the two views with
    ``test_time_flip`` (when cached), the photo's own features otherwise.
    """
    x, y = cache.features[split], cache.labels(split)
    if not cache.has_flipped:
        return x, y
    flipped = cache.flipped(split)
    if split == "train":
        return np.concatenate([x, flipped]), np.concatenate([y, y])
    if test_time_flip:
        return (x.astype(np.float32) + flipped.astype(np.float32)) / 2, y
    return x, y


def train_transfer(cache: FeatureCache, settings: TransferSettings, *, root: Path = Path("."),
                   image_frames: tuple[pd.DataFrame, pd.DataFrame] | None = None,
                   log_model: bool = True, strategy: tf.distribute.Strategy | None = None,
                   out_root: Path | None = None, verbose: int = 2) -> dict:
    """Transfer learning in two phases, recorded like every model (see :func:`record_model`).

    Phase ``head``: the head trains on the cached features only (never touching the
    backbone or the images). Then the full model (raw image → preprocessing → backbone with
    the cache's exact weights → trained head) is assembled, so ``model.keras`` takes 0–255
    images. Phase ``fine_tune`` (when ``fine_tune_layers > 0``): the top N backbone layers
    are unfrozen (BatchNorm stays frozen) and the model trains on images at
    ``fine_tune_learning_rate``. ``history.csv`` covers both phases (``phase`` column).

    A killed run resumes: the head phase is redone (seconds), then fine-tuning continues
    from its backup.

    The model folder is ``out_root / settings.model_dir``, the work state
    ``out_root / settings.checkpoint_dir`` (``out_root`` defaults to ``root``; a non-chief
    worker passes a throwaway one, :func:`dogbreeds.models.distribute.output_root`).

    Args:
        root: the project root (image paths of ``image_frames`` are relative to it).
        image_frames: ``(train_df, val_df)`` of images, needed only for fine-tuning.
        strategy: the ``tf.distribute`` strategy; batch sizes grow with its replicas. Under
            ``multi_worker`` both phases train with
            :func:`dogbreeds.models.multiworker.fit_multi_worker`.
    """
    s = settings
    strategy = strategy or tf.distribute.get_strategy()
    classes = list(cache.meta["classes"])
    image_size = int(cache.meta["image_size"])
    out_root = Path(root) if out_root is None else Path(out_root)
    out_dir, work_dir = out_root / s.model_dir, out_root / s.checkpoint_dir
    batch_size = global_batch_size(s.batch_size, strategy)
    head_batch_size = global_batch_size(s.head_batch_size, strategy)
    seed, name = s.seed, s.backbone
    seed_everything(seed)
    with strategy.scope():
        head = build_head(cache.feature_shape, len(classes), list(s.dense), s.dropout,
                          s.pooling, s.learning_rate)
    train_x, train_y = head_data(cache, "train", s.test_time_flip)
    n_train = len(train_x)
    train_ds = array_dataset(train_x, train_y, head_batch_size, shuffle=True, seed=seed)
    val_ds = array_dataset(*head_data(cache, "val", s.test_time_flip), head_batch_size)
    epochs = head_epochs(n_train, head_batch_size, s.head_steps, s.epochs)
    # Not backed up: the feature cache is the head's checkpoint, and redoing the head costs
    # less than writing a backup every epoch (~0.1 s each: a third of the head's time).
    head_fit = fit_model(head, train_ds, val_ds, strategy=strategy, epochs=epochs,
                         work_dir=work_dir / "head", phase="head", resumable=False,
                         early_stopping_patience=s.early_stopping_patience, verbose=verbose)
    with strategy.scope():
        model = build_transfer_model(name, cache.backbone_weights, image_size, head,
                                     pooling=s.pooling, learning_rate=s.learning_rate,
                                     test_time_flip=s.test_time_flip)
    histories, seconds = [head_fit.history], head_fit.seconds
    images_per_second = n_train * head_fit.epochs_run / max(head_fit.seconds, 1e-9)
    extra = {"head_seconds": round(head_fit.seconds, 3), "head_epochs": len(head_fit.history),
             "head_features_per_second": round(images_per_second, 3),
             "head_batch_size": head_batch_size,
             "head_steps": int(head.optimizer.iterations.numpy()),  # optimizer steps taken
             "backbone_pass_seconds": float(cache.meta.get("seconds", float("nan"))),
             "fine_tune_epochs": 0}
    if s.fine_tunes:
        if image_frames is None:
            raise ValueError("fine-tuning needs image_frames=(train_df, val_df)")
        train_df, val_df = image_frames
        with strategy.scope():
            unfreeze_top(find_backbone(model), s.fine_tune_layers)
            compile_classifier(model, s.fine_tune_learning_rate, len(classes))
        tune_fit = fit_model(
            model,
            make_dataset(train_df, classes, image_size, batch_size, shuffle=True, seed=seed,
                         root=root),
            make_dataset(val_df, classes, image_size, batch_size, root=root),
            strategy=strategy, epochs=s.fine_tune_epochs, work_dir=work_dir / "fine_tune",
            early_stopping_patience=s.early_stopping_patience, offset=len(head_fit.history),
            phase="fine_tune", verbose=verbose,
            # Same feature cache (so the same head data) and the same images, or start afresh.
            data_key=f"{cache.meta.get('fingerprint', '')}-"
                     f"{frames_fingerprint(train_df, val_df, root=root)}")
        histories.append(tune_fit.history)
        seconds += tune_fit.seconds
        images_per_second = len(train_df) * tune_fit.epochs_run / max(tune_fit.seconds, 1e-9)
        extra.update(fine_tune_seconds=round(tune_fit.seconds, 3),
                     fine_tune_epochs=len(tune_fit.history))
    history = pd.concat(histories, ignore_index=True)
    return record_model(model, history, name=name, kind="transfer", out_dir=out_dir,
                        classes=classes, image_size=image_size, train_seconds=seconds,
                        images_per_second=images_per_second,
                        backbone=name, log_model=log_model, extra_metrics=extra)
