"""dogbreeds.models.features: the backbone feature cache and the features stage's settings.

(Heads trained on the cache alone: test_transfer.py. Extraction throughput:
``python -m benchmarks.feature_extraction``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import datasets
from dogbreeds.models import features
from dogbreeds.settings import SettingsError
from support.feature_cache import BACKBONE, fake_feature_cache
from support.params import PARAMS, with_changes


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A feature cache over fake data (random resnet50 weights, 32 px), built once."""
    return fake_feature_cache(tmp_path_factory.mktemp("feat"))


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


def test_flip_views_are_the_mirror_images_features(tmp_path):
    """``flip_views``: a second view per row, the extractor's output on the mirrored photo,
    saved and loaded row for row."""
    import keras

    work, _, out = fake_feature_cache(tmp_path, flip_views=True)
    cache = features.load_feature_cache(out)
    assert cache.has_flipped and cache.meta["flip_views"] is True
    for split in datasets.SPLITS:
        assert cache.flipped(split).shape == cache.features[split].shape
    rows = cache.index[cache.index["split"] == "test"]
    images = next(iter(datasets.make_dataset(rows, cache.meta["classes"], 32, 64, root=work,
                                             with_labels=False))).numpy()
    extractor = features.feature_extractor(BACKBONE, cache.backbone_weights, 32, "avg")
    mirrored = extractor.predict(images[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(cache.flipped("test").astype(np.float32), mirrored,
                               rtol=2e-3, atol=2e-3)
    assert not np.allclose(mirrored, extractor.predict(images, verbose=0), atol=1e-2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(features.mirror(images)),
                                  images[:, :, ::-1])
    plain = features.load_feature_cache(fake_feature_cache(tmp_path / "plain")[2])
    assert not plain.has_flipped and "flip_views" not in plain.meta


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


def feature_settings(backbone: str = "mobilenetv2", **changes) -> features.FeatureSettings:
    return features.FeatureSettings.from_params(with_changes("train_transfer", **changes),
                                                backbone)


def test_settings_resolve_the_backbones_image_size():
    s = feature_settings(image_size={"mobilenetv2": 160})
    assert s.image_size == 160 and s.backbone == "mobilenetv2"
    assert s.cache_dir == Path(PARAMS["train_transfer"]["features_dir"]) / "mobilenetv2"
    # Not listed: the backbone's default; one int: every backbone.
    assert feature_settings(image_size={"vgg16": 64}).image_size == 224
    assert feature_settings("resnet50", image_size=96).image_size == 96


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "32", r"train_transfer\.batch_size: expected an integer, got '32'"),
    ("pooling", "mean", r"train_transfer\.pooling: expected one of"),
    ("use_augmented", "no", r"train_transfer\.use_augmented: expected true or false"),
    ("image_size", "big", r"train_transfer\.image_size"),
])
def test_a_bad_value_names_its_key(key, value, message):
    with pytest.raises(SettingsError, match=message):
        feature_settings(**{key: value})


def test_extraction_gives_one_pooled_vector_per_row(cache_dir):
    """(Its throughput is a benchmark: ``python -m benchmarks.feature_extraction``.)"""
    work, df, _ = cache_dir
    rows = df[df["origin"] == "original"]
    feats = features.extract_features(rows, "mobilenetv2", None, 32, "avg", 32, work)
    assert feats.shape == (len(rows), 1280) and feats.dtype == np.float32
    assert features.extract_features(rows.head(0), "mobilenetv2", None, 32, "avg", 8,
                                     work).shape == (0, 1280)
