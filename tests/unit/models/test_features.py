"""dogbreeds.models.features: the backbone feature cache, and heads trained on it alone."""

from __future__ import annotations

import json
import shutil
import time

import keras
import numpy as np
import pandas as pd
import pytest

from support import fakedata
from dogbreeds.models import backbones
from dogbreeds.data import datasets
from dogbreeds.models import features
from dogbreeds.tracking import store
from dogbreeds.models import training

# Random-init MobileNetV2's features vanish (~1e-12): ResNet50's stay informative.
BACKBONE = "resnet50"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A feature cache over fake data (random resnet50 weights, 32 px), built once."""
    work = tmp_path_factory.mktemp("feat")
    files = fakedata.make_tree(work, per_breed=16, size=40)
    df = fakedata.dataset_frame(work, files, val=4, test=2)
    df = pd.concat([df, df[df["split"] == "train"].assign(origin="augmented")],
                   ignore_index=True)
    training.seed_everything(0)
    by_split, index, meta, extractor = features.compute_feature_cache(
        df, datasets.class_names(df), BACKBONE, "none", 32, "avg", 16, work)
    out = features.save_feature_cache(work / "cache", by_split, index, meta,
                                      backbone=backbones.find_backbone(extractor))
    return work, df, out


def test_cache_round_trip(cache_dir):
    work, df, out = cache_dir
    cache = features.load_feature_cache(out)
    originals = df[df["origin"] == "original"]
    assert {s: len(cache.features[s]) for s in datasets.SPLITS} == \
        originals["split"].value_counts().to_dict()
    assert cache.features["train"].dtype == np.float16 and cache.feature_shape == (2048,)
    assert list(cache.index.columns) == features.INDEX_COLUMNS
    assert set(cache.index["origin"]) == {"original"}  # use_augmented=False
    assert cache.meta["classes"] == datasets.class_names(df)
    assert cache.meta["n"] == len(originals) and cache.meta["images_per_second"] > 0
    assert cache.backbone_weights.is_file()
    np.testing.assert_array_equal(
        cache.labels("val"), datasets.labels_for(cache.index[cache.index["split"] == "val"],
                                             cache.meta["classes"]))


def test_cached_features_are_the_extractors_output(cache_dir):
    work, _, out = cache_dir
    cache = features.load_feature_cache(out)
    rows = cache.index[cache.index["split"] == "test"]
    again = features.extract_features(rows, BACKBONE, cache.backbone_weights, 32, "avg", 4,
                                      work)
    np.testing.assert_allclose(again, cache.features["test"].astype(np.float32),
                               rtol=2e-3, atol=2e-3)


def test_fingerprint_depends_on_inputs(cache_dir):
    work, df, _ = cache_dir
    rows = df[df["origin"] == "original"]
    a = features.input_fingerprint(rows, work, {"pooling": "avg"})
    assert a == features.input_fingerprint(rows, work, {"pooling": "avg"})
    assert a != features.input_fingerprint(rows, work, {"pooling": "max"})
    assert a != features.input_fingerprint(rows.iloc[1:], work, {"pooling": "avg"})


def test_save_and_load_fail_clearly(tmp_path):
    index = pd.DataFrame({"split": ["train", "val"], "path": ["a", "b"]})
    with pytest.raises(ValueError, match="train: 3 feature rows but 1 index rows"):
        features.save_feature_cache(tmp_path, {"train": np.zeros((3, 2)), "val": np.zeros((1, 2)),
                                               "test": np.zeros((0, 2))}, index, {})
    with pytest.raises(FileNotFoundError, match="run the features stage"):
        features.load_feature_cache(tmp_path / "nothing")


def test_head_trains_on_the_cache_alone(cache_dir, tmp_path, capsys):
    """Images removed: the head phase and the assembled model need only the cache; the
    assembled model on raw images agrees with the head on the cached features."""
    work, df, out = cache_dir
    cache_copy = shutil.copytree(out, tmp_path / "cache")
    cache = features.load_feature_cache(cache_copy)
    hidden = tmp_path / "hidden"
    shutil.move(str(work / "Images"), hidden)
    try:
        with store.stage_run("train_transfer", tmp_path, experiment="t"):
            metrics = training.train_transfer(
                cache, backbone_name=BACKBONE, out_dir=tmp_path / "model",
                work_dir=tmp_path / "work", dense=[32], dropout=0.1, pooling="avg",
                learning_rate=3e-3, epochs=25, batch_size=8, head_batch_size=4,
                early_stopping_patience=25, seed=0, log_model=False, verbose=0)
    finally:
        shutil.move(str(hidden), work / "Images")
    assert metrics["val_accuracy"] > 0.6, metrics  # chance is 1/3
    assert metrics["head_batch_size"] == 4
    # The head is redone, not resumed, after a kill: no per-epoch weight files were written.
    assert not list((tmp_path / "work" / "head").glob("**/*.h5"))
    history = pd.read_csv(tmp_path / "model" / "history.csv")
    assert set(history["phase"]) == {"head"} and history["loss"].iloc[-1] < history["loss"].iloc[0]
    with capsys.disabled():
        print(f"\nhead on cached features: {metrics['head_seconds']:.2f} s for "
              f"{metrics['head_epochs']} epochs vs one backbone pass "
              f"{cache.meta['seconds']:.2f} s ({cache.meta['n']} images at 32 px)")
    model = keras.models.load_model(tmp_path / "model" / "model.keras")
    rows = cache.index["split"] == "val"
    images = next(iter(datasets.make_dataset(cache.index[rows], cache.meta["classes"], 32, 64,
                                         root=work)))[0]
    head = model.get_layer("head")
    np.testing.assert_allclose(model.predict(images, verbose=0),
                               head.predict(cache.features["val"].astype(np.float32), verbose=0),
                               atol=2e-3)
    assert json.loads((tmp_path / "model" / "card.json").read_text())["kind"] == "transfer"


def test_feature_extraction_throughput_mobilenetv2_160(cache_dir, capsys):
    """Measured, not asserted: frozen MobileNetV2 at 160 px on CPU (random weights)."""
    work, df, _ = cache_dir
    rows = df[df["origin"] == "original"]
    extractor = features.feature_extractor("mobilenetv2", None, 160, "avg")
    features.extract_features(rows.head(8), "mobilenetv2", None, 160, "avg", 8, work,
                              extractor=extractor)  # warm-up (graph tracing)
    start = time.perf_counter()
    feats = features.extract_features(rows, "mobilenetv2", None, 160, "avg", 32, work,
                                      extractor=extractor)
    rate = len(rows) / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nfeature extraction mobilenetv2 @160 px: {rate:.1f} images/s")
    assert feats.shape == (len(rows), 1280)
