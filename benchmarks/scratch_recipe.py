"""Scratch-CNN recipes side by side: validation curve, test top-1, images/s, and why val jumps.

Trains the ``train_scratch`` CNN exactly as the stage does (``ScratchSettings.build_model``,
the stage's datasets and ``fit_resumable`` with its early stopping) on a project whose
``augment`` stage has run (``--project``, e.g. a throwaway clone pointed at the 25-breed dev
set), with ``-S key=value`` overrides of ``train_scratch`` (YAML values). Then it scores the
kept weights on the test split (top-1, top-5, log loss).

Measured on the side, never inside the timed fit:

* the input pipeline alone (decode + resize, images/s), the online augmentation layers alone
  (training mode, images/s) and a full training step (images/s), each over ``--profile-batches``
  batches after a warm-up;
* ``--diagnose``: after every epoch, validation accuracy once more with *precise* BatchNorm
  statistics (re-estimated, block by block, on ``--bn-batches`` un-augmented training batches)
  and accuracy on a fixed subset of training photos. If the precise-BN curve is steady where
  the normal one jumps, the moving statistics cause the jumps; if both jump together (and the
  training-subset accuracy too), the weights themselves swing: the learning rate.

    python -m benchmarks.scratch_recipe --project PATH --name before \\
        -S block_type=plain -S schedule=constant -S learning_rate=0.001 ...

``--scored DIR`` scores a model folder the ``train_scratch`` stage wrote instead of training
(its history.csv and metrics.json, plus the test split): how "before" was measured, the stage
itself run with the old defaults.

Writes ``benchmarks/results/scratch_recipe_<name>.json``; ``benchmarks.scratch_curves`` draws
the curves of several runs into one PNG.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf

from benchmarks.common import load, write_result
from dogbreeds.data import datasets, tables
from dogbreeds.models import fit
from dogbreeds.models.scratch import ScratchSettings, steps_per_epoch
from dogbreeds.profiles import parse_override, set_path
from pipeline.common import PARAMS_FILE, load_params

NAME = "scratch_recipe"


def with_overrides(params: dict, overrides: list[str]) -> dict:
    """``params`` with ``train_scratch.<key>`` set from ``key=value`` (value parsed as YAML,
    as ``dogbreeds profile -S`` does)."""
    params = copy.deepcopy(params)
    for item in overrides:
        keys, value = parse_override(item)
        set_path(params, ["train_scratch", *keys], value)
    return params


class PreciseBatchNorm(keras.callbacks.Callback):
    """After each epoch: val accuracy with BatchNorm statistics re-estimated on training
    photos (no augmentation), and accuracy on a fixed training subset (moving statistics).

    The model's own weights and moving statistics are put back before training goes on.
    """

    def __init__(self, model: keras.Model, train_images: np.ndarray, train_subset, val_ds):
        super().__init__()
        self.net, self.images, self.subset, self.val = model, train_images, train_subset, val_ds
        self.bns = [layer for layer in model.layers
                    if isinstance(layer, keras.layers.BatchNormalization)]
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        saved = [[w.numpy() for w in bn.non_trainable_weights] for bn in self.bns]
        train_acc = _accuracy(self.net, self.subset)
        for bn in self.bns:  # in order: each re-estimate sees the corrected layers before it
            probe = keras.Model(self.net.inputs, bn.input)
            feats = np.concatenate([probe(x, training=False).numpy() for x in self.images])
            axes = tuple(range(feats.ndim - 1))
            bn.moving_mean.assign(feats.mean(axis=axes))
            bn.moving_variance.assign(feats.var(axis=axes))
        precise = _accuracy(self.net, self.val)
        for bn, values in zip(self.bns, saved, strict=True):
            for w, v in zip(bn.non_trainable_weights, values, strict=True):
                w.assign(v)
        row = {"epoch": epoch + 1, "val_accuracy": float((logs or {}).get("val_accuracy", 0)),
               "val_accuracy_precise_bn": precise, "train_subset_accuracy": train_acc,
               "seconds": round(time.perf_counter() - start, 1)}
        self.rows.append(row)
        print(f"  diagnose: {row}", flush=True)


def _accuracy(model: keras.Model, ds) -> float:
    hits = total = 0
    for x, y in ds:
        pred = np.argmax(model(x, training=False).numpy(), axis=1)
        hits += int((pred == y.numpy()).sum())
        total += len(pred)
    return hits / max(total, 1)


def test_scores(model: keras.Model, ds) -> dict:
    """Top-1, top-5 and log loss of ``model`` over a labelled dataset."""
    probs, labels = [], []
    for x, y in ds:
        probs.append(model(x, training=False).numpy())
        labels.append(y.numpy())
    p, y = np.concatenate(probs), np.concatenate(labels)
    top5 = np.argsort(-p, axis=1)[:, :5]
    return {"test_top1": float((p.argmax(axis=1) == y).mean()),
            "test_top5": float((top5 == y[:, None]).any(axis=1).mean()),
            "test_log_loss": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1)).mean()),
            "test_images": int(len(y))}


def profile_throughput(model: keras.Model, train_ds, batches: int) -> dict:
    """images/s of the input pipeline alone, the augmentation layers alone, and train steps."""
    def rate(fn, data) -> float:
        fn(data[0])  # warm-up (tracing)
        start = time.perf_counter()
        n = 0
        for item in data[1:]:
            fn(item)
            n += int(item[0].shape[0]) if isinstance(item, tuple) else int(item.shape[0])
        return n / (time.perf_counter() - start)

    start = time.perf_counter()
    cached = list(train_ds.take(batches + 1))
    n_loaded = sum(int(x.shape[0]) for x, _ in cached)
    input_rate = n_loaded / (time.perf_counter() - start)
    augmentation = model.get_layer("augmentation")
    augment = tf.function(lambda x: augmentation(x, training=True))
    aug_rate = rate(lambda b: augment(b[0]), cached)
    # A copy, so the profile's steps leave the measured model's weights untouched; Keras'
    # own train step (train_on_batch), the one fit runs.
    clone = keras.models.clone_model(model)
    clone.compile(optimizer=keras.optimizers.Adam(1e-4), loss=model.loss)

    def step(x, y):
        clone.train_on_batch(x, y)

    step_rate = rate(lambda b: step(*b), cached)
    return {"input_pipeline_images_per_s": round(input_rate, 1),
            "augmentation_images_per_s": round(aug_rate, 1),
            "train_step_images_per_s": round(step_rate, 1),
            "augmentation_share_of_step": round(step_rate / aug_rate, 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--name", required=True, help="result file suffix, e.g. before / after")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override train_scratch.KEY (YAML value); repeatable")
    parser.add_argument("--diagnose", action="store_true",
                        help="per-epoch precise-BatchNorm val accuracy (see the docstring)")
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--profile-batches", type=int, default=20)
    parser.add_argument("--scored", type=Path, default=None,
                        help="a train_scratch model folder to score instead of training")
    args = parser.parse_args(argv)
    load_before = load()
    project = args.project.resolve()
    if args.scored is not None:
        return score_stage_output(project, args.scored, args.name, load_before)
    params = with_overrides(load_params(project / PARAMS_FILE), args.set)
    settings = ScratchSettings.from_params(params)
    seed = settings.seed
    fit.seed_everything(seed)
    df = tables.read_stage_table(params, project, "augment")
    data = datasets.train_val_datasets(df, settings.image_size, settings.batch_size,
                                       use_augmented=settings.use_augmented, seed=seed,
                                       root=project)
    _, _, test_df = datasets.training_frames(df, use_augmented=False)
    test_ds = datasets.make_dataset(test_df, data.classes, settings.image_size,
                                    settings.batch_size, root=project)
    steps = steps_per_epoch(len(data.train_df), settings.batch_size)
    model = settings.build_model(len(data.classes), steps)
    profile = profile_throughput(model, data.train, args.profile_batches)
    print(f"{NAME}[{args.name}]: {len(data.train_df)} training images, {steps} steps/epoch, "
          f"{model.count_params():,} params; {profile}", flush=True)
    fit.seed_everything(seed)
    model = settings.build_model(len(data.classes), steps)  # fresh: same seed, same weights
    # The stage's own callbacks (precise BatchNorm statistics unless -S precise_bn_batches=0).
    extra = settings.batchnorm_callbacks(datasets.clean_training_dataset(
        df, data.classes, settings.image_size, settings.batch_size, seed=seed, root=project))
    diagnosis = None
    if args.diagnose:
        originals = datasets.split_rows(df, "train")
        plain = datasets.make_dataset(originals, data.classes, settings.image_size,
                                      settings.batch_size, shuffle=True, seed=seed,
                                      root=project)
        bn_images = [x for x, _ in plain.take(args.bn_batches)]
        diagnosis = PreciseBatchNorm(model, bn_images, plain.take(10), data.val)
        extra.append(diagnosis)
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        with mlflow.start_run():
            result = fit.fit_resumable(
                model, data.train, data.val, epochs=settings.epochs,
                work_dir=Path(tmp) / "work", smoothing=settings.early_stopping_smoothing,
                early_stopping_patience=settings.early_stopping_patience,
                extra_callbacks=extra)
    diag_seconds = sum(row["seconds"] for row in diagnosis.rows) if diagnosis else 0.0
    train_seconds = result.seconds - diag_seconds
    history = result.history
    best = fit.best_row(history)
    val = history["val_accuracy"].to_numpy()
    third = max(1, math.ceil(len(val) / 3))
    drops = [float(val[i - 1] - val[i]) for i in range(third, len(val))]
    out = {
        "name": args.name,
        "project_images": int(len(df[df["origin"] == "original"])),
        "classes": len(data.classes),
        "train_images_per_epoch": int(len(data.train_df)),
        "steps_per_epoch": steps,
        "params": int(model.count_params()),
        "settings": {k: v for k, v in params["train_scratch"].items() if k != "output"},
        "epochs_run": int(len(history)),
        "optimizer_steps": int(len(history) * steps),
        "best_epoch": int(best["epoch"]),
        "best_val_accuracy": float(best["val_accuracy"]),
        "max_val_accuracy": float(val.max()),
        "largest_val_drop_after_first_third": round(max(drops, default=0.0), 4),
        "train_minutes": round(train_seconds / 60, 2),
        "fit_images_per_s": round(len(data.train_df) * len(history) / train_seconds, 1),
        **profile,
        **test_scores(model, test_ds),
        "history": history.round(4).to_dict(orient="list"),
        "diagnose": diagnosis.rows if diagnosis else None,
        "load_after": load(),
    }
    print({k: v for k, v in out.items() if k not in ("history", "settings", "diagnose")})
    write_result(f"{NAME}_{args.name}", out, load_before)
    return out


def score_stage_output(project: Path, folder: Path, name: str, load_before: list[float]) -> dict:
    """Test scores and curve of a model folder written by the ``train_scratch`` stage."""
    import json

    import pandas as pd

    params = load_params(project / PARAMS_FILE)
    metrics = json.loads((folder / "metrics.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    card = json.loads((folder / "card.json").read_text())
    df = tables.read_stage_table(params, project, "augment")
    _, _, test_df = datasets.training_frames(df, use_augmented=False)
    model = keras.models.load_model(folder / "model.keras", compile=False)
    test_ds = datasets.make_dataset(test_df, card["classes"], card["image_size"], 32,
                                    root=project)
    val = history["val_accuracy"].to_numpy()
    third = max(1, math.ceil(len(val) / 3))
    out = {"name": name, "source": "train_scratch stage output", "metrics": metrics,
           "train_minutes": round(metrics["train_seconds"] / 60, 2),
           "fit_images_per_s": metrics["images_per_second"],
           "best_val_accuracy": metrics["val_accuracy"], "max_val_accuracy": float(val.max()),
           "largest_val_drop_after_first_third": round(max(
               (float(val[i - 1] - val[i]) for i in range(third, len(val))), default=0.0), 4),
           **test_scores(model, test_ds),
           "history": history.round(4).to_dict(orient="list"), "load_after": load()}
    print({k: v for k, v in out.items() if k != "history"})
    write_result(f"{NAME}_{name}", out, load_before)
    return out


if __name__ == "__main__":
    main()
