"""Accuracy: every model the pipeline can make, on the same real photos in one run, one table.

The data stages (``download → build_metadata → split → augment → features@mobilenetv2``,
the pipeline's own code and this checkout's params.yaml) run once in a project under
``$DOGBREEDS_BENCH_DIR`` (:mod:`benchmarks.accuracy_project`; reused while their params are
unchanged), on the 25-breed dev set (``--data dev``, 4,168 cropped photos) or the 4-breed
sample (``--data sample``). The split is the ``split`` stage's (stratified, seed 42). Then,
each scored on the untouched test split (top-1, top-5, log loss) with its training minutes:

* ``linear probe``: scikit-learn ``LogisticRegression`` on the cached MobileNetV2 features of
  the training photos, ``C`` chosen on validation (:mod:`dogbreeds.models.probe`);
* ``transfer head (before)``: :func:`dogbreeds.models.transfer.train_transfer` with the head
  defaults before issue 15 (:data:`BEFORE`: 30 epochs of 256-vector batches, one view, no
  test-time flip);
* ``transfer head (params.yaml)``: the same function with this checkout's ``train_transfer``
  params (the defaults), scored through the assembled ``model.keras`` on the test images;
* ``scratch CNN`` and ``tuned CNN``: the ``train_scratch`` and ``tune`` stages with this
  checkout's params, run in the project (``python -m pipeline.<stage>``);
* ``seeds' scratch design``: 3 conv + max-pool blocks, two dense layers (the seeds' decks),
  trained on the same data for the scratch CNN's training seconds.

Transfer rows' minutes add the head's fit to the backbone pass over the photos (each view
the head uses: the mirror-image view is a second pass). ``--only transfer`` skips the three
scratch rows (~25 min on the dev set) to iterate on heads.

    python -m benchmarks.accuracy --data dev                  # the full table
    python -m benchmarks.accuracy --data dev --only transfer  # probe and heads (~3 min)
    python -m benchmarks.accuracy --data sample

Note: ImageNet-pretrained backbones have seen some Stanford Dogs photos, and the offline
MobileNetV2 weights were fine-tuned on 19 Stanford Dogs breeds (none of the dev set's 25):
transfer numbers are flattered.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from benchmarks.accuracy_project import (
    BACKBONE,
    prepare_data,
    project_params,
    run_stage,
)
from benchmarks.common import load, write_result

NAME = "accuracy"
# The transfer head's defaults before issue 15 (params.yaml at 934e92d): ~12 steps per
# epoch on 2,918 dev vectors.
BEFORE = {"head_batch_size": 256, "epochs": 30, "head_steps": None, "learning_rate": 0.001,
          "dense": (256,), "dropout": 0.3, "early_stopping_patience": 5,
          "test_time_flip": False}
COLUMNS = ["model", "test_top1", "test_top5", "test_log_loss", "train_minutes", "detail"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["dev", "sample"], default="dev")
    parser.add_argument("--only", choices=["all", "transfer"], default="all",
                        help="transfer: the probe and heads only (no scratch CNNs)")
    parser.add_argument("--fresh", action="store_true", help="rerun the data stages")
    parser.add_argument("--name", default=None, help="results file (default accuracy_<data>)")
    return parser.parse_args(argv)


def table_row(model: str, labels: np.ndarray, probs: np.ndarray, train_seconds: float,
              detail: str = "") -> dict:
    """One row of the table: test scores from the probabilities, minutes from seconds."""
    from dogbreeds.models.evaluation import classification_metrics

    m = classification_metrics(np.asarray(labels), np.asarray(probs))
    return {"model": model, "test_top1": round(m["accuracy"], 4),
            "test_top5": round(m["top5_accuracy"], 4), "test_log_loss": round(m["log_loss"], 4),
            "train_minutes": round(train_seconds / 60, 2), "detail": detail}


def accuracy_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """The rows in order with :data:`COLUMNS`, plus each model's top-1 gain over the probe
    (points; empty without a probe row).

    Raises:
        ValueError: when a row lacks a column.
    """
    missing = [(r.get("model"), c) for r in rows for c in COLUMNS if c not in r]
    if missing:
        raise ValueError(f"rows lack columns: {missing}")
    table = pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=COLUMNS)
    probe = table.loc[table["model"].str.startswith("linear probe"), "test_top1"]
    gain = (table["test_top1"] - probe.iloc[0]) * 100 if len(probe) else np.nan
    table.insert(2, "vs_probe_points", np.round(gain, 1) if len(probe) else gain)
    return table


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown: scores to 4 digits, points to 1, minutes to 2."""
    from dogbreeds.models.comparison import markdown_table

    formats = {"test_top1": "{:.4f}", "test_top5": "{:.4f}", "test_log_loss": "{:.4f}",
               "vs_probe_points": "{:+.1f}", "train_minutes": "{:.2f}"}
    shown = table.copy().astype(object)
    for column, fmt in formats.items():
        shown[column] = [fmt.format(v) if pd.notna(v) else "" for v in table[column]]
    return markdown_table(shown)


def probe_row(cache) -> dict:
    from dogbreeds.models.probe import fit_probe

    probe = fit_probe(cache.features["train"], cache.labels("train"), cache.features["val"],
                      cache.labels("val"))
    probs = probe.predict_proba(cache.features["test"])
    seconds = probe.seconds + view_seconds(cache)
    print(f"  probe: C={probe.C} ({probe.seconds:.1f} s for {len(probe.val_scores)} Cs)")
    return table_row("linear probe (LogisticRegression)", cache.labels("test"), probs, seconds,
                     f"C={probe.C} of {sorted(probe.val_scores)} by val accuracy; "
                     f"val {probe.val_scores[probe.C]['val_accuracy']:.4f}")


def view_seconds(cache) -> float:
    """Seconds of one backbone pass over the cache's photos (a cache with mirror views
    timed two)."""
    return float(cache.meta["seconds"]) / (2 if cache.has_flipped else 1)


def one_view(cache):
    """The cache as computed without ``flip_views`` (what the head saw before)."""
    from dogbreeds.data.datasets import SPLITS

    return dataclasses.replace(cache, features={s: cache.features[s] for s in SPLITS})


def transfer_row(label: str, root: Path, params: dict, cache, test_df: pd.DataFrame,
                 changes: Mapping | None = None) -> dict:
    """Train the head with ``train_transfer``'s params (+ ``changes``), then score the
    assembled model.keras on the test photos."""
    from dogbreeds.data import datasets, tables
    from dogbreeds.data.datasets import make_dataset
    from dogbreeds.models import transfer
    from dogbreeds.models.evaluation import predict_dataset
    from dogbreeds.tracking import store

    settings = transfer.TransferSettings.from_params(params, BACKBONE)
    settings = dataclasses.replace(settings, **(changes or {}),
                                   output=Path("bench_models") / label.replace(" ", "_"))
    frames = None
    if settings.fine_tunes:  # phase 2 trains on the images, as the stage does
        table = tables.read_stage_table(params, root, "augment")
        frames = datasets.training_frames(table, settings.use_augmented)[:2]
    with store.stage_run("train_transfer", root, experiment="accuracy-benchmark",
                         run_name=label):
        metrics = transfer.train_transfer(cache, settings, root=root, image_frames=frames,
                                          log_model=False, verbose=0)
    model = keras.models.load_model(root / settings.model_dir / "model.keras")
    classes = list(cache.meta["classes"])
    dataset = make_dataset(test_df, classes, int(cache.meta["image_size"]), 32, root=root)
    probs, labels, latency_ms = predict_dataset(model, dataset)
    views = 2 if cache.has_flipped else 1
    seconds = metrics["train_seconds"] + views * view_seconds(cache)
    print(f"  {label}: {metrics['head_epochs']} epochs, {metrics['head_steps']} steps, "
          f"{metrics['fine_tune_epochs']} fine-tuning epochs, {metrics['train_seconds']:.1f} s; "
          f"test latency {latency_ms:.1f} ms/photo")
    tuned = f", fine-tuned {settings.fine_tune_layers} layers" if settings.fine_tunes else ""
    detail = (f"{metrics['head_steps']} steps ({metrics['head_epochs']} epochs of "
              f"{settings.head_batch_size}), {views} view(s)"
              f"{', test-time flip' if settings.test_time_flip else ''}"
              f"{tuned}; "
              f"val {metrics['val_accuracy']:.4f}; {latency_ms:.1f} ms/photo")
    return table_row(label, labels, probs, seconds, detail)


def scratch_rows(root: Path, params: dict, test_df: pd.DataFrame) -> Iterator[dict]:
    """The ``train_scratch`` and ``tune`` stages in the project, then the seeds' design for
    the scratch CNN's training seconds (one row each, as each finishes)."""
    for stage, label in (("train_scratch", "scratch CNN (train_scratch)"),
                         ("tune", "tuned CNN (tune)")):
        wall = run_stage(root, stage)
        out = root / params[stage]["output"]
        metrics = json.loads((out / "metrics.json").read_text())
        labels, probs = score_saved_model(out, test_df, root)
        seconds = wall if stage == "tune" else metrics["train_seconds"]
        yield table_row(label, labels, probs, seconds,
                        f"{metrics['epochs']} epochs, val {metrics['val_accuracy']:.4f}"
                        f"{'; stage wall time incl. search' if stage == 'tune' else ''}")
        if stage == "train_scratch":
            budget = float(metrics["train_seconds"])
    yield seeds_row(root, params, test_df, budget)


def score_saved_model(model_dir: Path, test_df: pd.DataFrame, root: Path
                      ) -> tuple[np.ndarray, np.ndarray]:
    from dogbreeds.data.datasets import make_dataset
    from dogbreeds.models.evaluation import predict_dataset

    card = json.loads((model_dir / "card.json").read_text())
    model = keras.models.load_model(model_dir / "model.keras")
    dataset = make_dataset(test_df, card["classes"], int(card["image_size"]), 32, root=root)
    probs, labels, _ = predict_dataset(model, dataset)
    return labels, probs


def seeds_model(num_classes: int, image_size: int, learning_rate: float = 1e-3):
    """The seeds' scratch CNN: 3 × (Conv2D 3×3 ReLU → MaxPool), Flatten, Dense 128 ReLU,
    Dropout 0.5, Dense softmax; Adam."""
    from dogbreeds.models.builders import compile_classifier

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(x))
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(
        keras.layers.Dropout(0.5)(x))
    return compile_classifier(keras.Model(inputs, outputs, name="seeds_cnn"), learning_rate,
                              num_classes)


def seeds_row(root: Path, params: dict, test_df: pd.DataFrame, budget_seconds: float) -> dict:
    """The seeds' design on train_scratch's data and input size, stopped when the budget is
    spent (mid-epoch too); keeps the weights of its best validation-loss epoch."""
    from dogbreeds.data import datasets, tables
    from dogbreeds.models.evaluation import predict_dataset
    from dogbreeds.models.fit import seed_everything
    from dogbreeds.models.scratch import ScratchSettings

    s = ScratchSettings.from_params(params)
    seed_everything(s.seed)
    table = tables.read_stage_table(params, root, "augment")
    data = datasets.train_val_datasets(table, s.image_size, s.batch_size,
                                       use_augmented=s.use_augmented, seed=s.seed, root=root)
    model = seeds_model(len(data.classes), s.image_size)
    keeper = TimeBudget(budget_seconds)
    start = time.perf_counter()
    model.fit(data.train, validation_data=data.val, epochs=10_000, callbacks=[keeper],
              verbose=0)
    seconds = time.perf_counter() - start
    if keeper.best_weights is not None:
        model.set_weights(keeper.best_weights)
    dataset = datasets.make_dataset(test_df, data.classes, s.image_size, 32, root=root)
    probs, labels, _ = predict_dataset(model, dataset)
    print(f"  seeds' design: {keeper.epochs} epochs in {seconds:.0f} s")
    return table_row("seeds' scratch design (3 conv+pool, 2 dense)", labels, probs, seconds,
                     f"{keeper.epochs} epochs in the scratch CNN's {budget_seconds / 60:.1f} "
                     f"min, best val loss epoch, {s.image_size} px")


class TimeBudget(keras.callbacks.Callback):
    """Stop once ``seconds`` have passed (checked after every batch); keep the weights of the
    epoch with the lowest validation loss."""

    def __init__(self, seconds: float):
        super().__init__()
        self.deadline = time.perf_counter() + seconds
        self.best_loss, self.best_weights, self.epochs = np.inf, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() >= self.deadline:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epochs = epoch + 1
        loss = (logs or {}).get("val_loss", np.inf)
        if loss < self.best_loss:
            self.best_loss, self.best_weights = loss, self.model.get_weights()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = load()
    params = project_params(args.data)
    print(f"{NAME}: data {args.data}; preparing the project (data stages + features)",
          flush=True)
    root, prep = prepare_data(args.data, params, fresh=args.fresh)

    from dogbreeds.data import tables
    from dogbreeds.models import evaluation, features, fit
    from dogbreeds.models.transfer import TransferSettings

    # Every model trains from zero: no resume backups or tuner trials of an earlier run.
    shutil.rmtree(root / "checkpoints", ignore_errors=True)
    fit.seed_everything(int(params["base"]["seed"]))
    cache_dir = root / TransferSettings.from_params(params, BACKBONE).cache_dir
    cache = features.load_feature_cache(cache_dir)
    test_df = evaluation.test_frame(tables.read_stage_table(params, root, "augment"))
    rows = [probe_row(one_view(cache)),
            transfer_row("transfer head (before)", root, params, one_view(cache), test_df,
                         BEFORE),
            transfer_row("transfer head (params.yaml)", root, params, cache, test_df)]
    name = args.name or f"{NAME}_{args.data}"
    if args.only == "all":
        # Stored row by row: the scratch trainings take most of the run.
        print(markdown(accuracy_table(rows)), flush=True)
        write_result(name, summary(args, params, cache, prep, rows, partial=True), load_before)
        for row in scratch_rows(root, params, test_df):
            rows.append(row)
            write_result(name, summary(args, params, cache, prep, rows, partial=True),
                         load_before)
    result = summary(args, params, cache, prep, rows, partial=False)
    print(markdown(accuracy_table(rows)))
    write_result(name, result, load_before)
    return result


def summary(args: argparse.Namespace, params: dict, cache, prep: dict, rows: list[dict], *,
            partial: bool) -> dict:
    """What the results file holds: the table and where it came from."""
    table = accuracy_table(rows)
    return {"data": args.data, "only": args.only, "partial": partial,
            "images_by_split": cache.meta["n_by_split"],
            "classes": len(cache.meta["classes"]),
            "backbone": f"{BACKBONE} {cache.meta['image_size']} px, offline weights",
            "feature_pass_seconds_per_view": round(view_seconds(cache), 1),
            "data_stage_seconds": {k: round(v, 1) for k, v in prep.items()},
            "before": {k: list(v) if isinstance(v, tuple) else v for k, v in BEFORE.items()},
            "train_transfer": params["train_transfer"] | {"weights": "offline mobilenetv2 160"},
            "table": table.to_dict(orient="records"),
            "note": "test split of the pipeline's stratified split (seed 42); ImageNet-"
                    "pretrained backbones have seen some Stanford Dogs photos and the offline "
                    "weights were fine-tuned on 19 other Stanford Dogs breeds: transfer rows "
                    "are flattered."}


if __name__ == "__main__":
    main()
