"""augment: deterministic OpenCV copies of the training originals only."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dogbreeds.data import augment, metadata, split
from dogbreeds.data.augment import AugmentSettings, AugmentStageSettings
from dogbreeds.settings import SettingsError
from support import fakedata
from support.project import REMOVED, repo_params

IDENTITY = dict(rotation=0.0, hflip=0.0, zoom=(1.0, 1.0), aspect=(1.0, 1.0), clahe=0.0)
# The dataclass has no defaults: these are params.yaml's values but copies (2); tests change
# what they need.
BASE = dict(copies=2, seed=42, rotation=15.0, hflip=0.5, zoom=(0.8, 1.0), aspect=(0.85, 1.15),
            clahe=0.3, max_side=500, jpeg_quality=92)


def settings(**changes) -> AugmentSettings:
    return AugmentSettings(**{**BASE, **changes})


def photo(height: int = 60, width: int = 80) -> np.ndarray:
    """Asymmetric BGR test image: a flip or rotation must change it."""
    return cv2.resize(fakedata.breed_image(1, np.random.default_rng(0), 48), (width, height))


def run(image: np.ndarray, seed: int = 0, **changes) -> np.ndarray:
    return augment.augment_image(image, np.random.default_rng(seed),
                                settings(**{**IDENTITY, "max_side": 500, **changes}))


def test_identity_settings_return_the_same_pixels():
    image = photo()
    assert np.array_equal(run(image), image)


def test_flip_mirrors_and_rotation_changes_pixels():
    image = photo()
    assert np.array_equal(run(image, hflip=1.0), cv2.flip(image, 1))
    rotated = run(image, rotation=20.0)
    assert rotated.shape == image.shape and np.abs(rotated.astype(int) - image).mean() > 5


def test_zoom_aspect_and_max_side_set_the_output_size():
    image = photo(100, 200)
    assert run(image, zoom=(0.5, 0.5)).shape == (50, 100, 3)
    assert run(image, zoom=(0.5, 0.5), aspect=(1.2, 1.2)).shape == (50, 120, 3)
    assert run(image, max_side=64).shape == (32, 64, 3)


def test_clahe_equalizes_the_lightness_channel():
    image = (photo() // 4 + 100).astype(np.uint8)   # low contrast
    equalized = run(image, clahe=1.0)
    assert np.array_equal(equalized, augment.clahe_lab(image))
    lightness = [cv2.cvtColor(x, cv2.COLOR_BGR2LAB)[..., 0].std() for x in (image, equalized)]
    assert lightness[1] > lightness[0] * 1.2


def test_same_rng_seed_same_image_and_bad_inputs_fail():
    image = photo()
    changes = dict(rotation=15.0, hflip=0.5, zoom=(0.8, 1.0), aspect=(0.85, 1.15), clahe=0.5)
    assert np.array_equal(run(image, 7, **changes), run(image, 7, **changes))
    assert not np.array_equal(run(image, 7, **changes), run(image, 8, **changes))
    with pytest.raises(ValueError, match=r"expected a BGR uint8 image \[H, W, 3\]"):
        run(image[..., 0])
    with pytest.raises(ValueError, match="zoom=.*hflip=2"):
        settings(zoom=(0.9, 1.2), hflip=2)


def test_settings_from_params_ignore_unrelated_keys():
    values = {**BASE, "enabled": True, "output": "x", "copies": 3, "zoom": [0.7, 0.9], "seed": 5}
    made = AugmentSettings.from_params(values)
    assert (made.copies, made.zoom, made.seed) == (3, (0.7, 0.9), 5)


def test_stage_settings_come_from_params_yaml_only():
    params = repo_params()
    stage = AugmentStageSettings.from_params(params)
    assert stage.enabled is True and stage.output == Path("data/augmented")
    assert stage.images.copies == params["augment"]["copies"] == 1   # no dataclass default
    assert stage.images.zoom == (0.8, 1.0) and isinstance(stage.images.rotation, float)


@pytest.mark.parametrize("key, bad, message", [
    ("copies", "two", r"augment\.copies: expected an integer, got 'two'"),
    ("zoom", [0.8, "x"], r"augment\.zoom\[1\]: expected a number"),
    ("enabled", "no", r"augment\.enabled: expected true or false"),
    ("jpeg_quality", REMOVED, r"missing augment\.jpeg_quality"),
])
def test_a_bad_setting_names_its_key(key, bad, message):
    with pytest.raises(SettingsError, match=message):
        AugmentStageSettings.from_params(repo_params(f"augment.{key}", bad))


def test_settings_validation_still_checks_ranges():
    with pytest.raises(ValueError, match=r"zoom=\[0\.8\] must be \[low, high\]"):
        settings(zoom=(0.8,))
    with pytest.raises(ValueError, match=r"copies=-1 < 0.*jpeg_quality=0 not in 1\.\.100"):
        settings(copies=-1, jpeg_quality=0)


@pytest.fixture()
def project(tmp_path, fake_tree) -> tuple[Path, pd.DataFrame]:
    """Project folder with the fake photos and their split table (folds=2)."""
    shutil.copytree(fake_tree, tmp_path / "data" / "raw")
    df = metadata.build_metadata(tmp_path / "data" / "raw", "all", relative_to=tmp_path)
    return tmp_path, split.split_dataset(df, "stratified", 0.2, 0.2, seed=0, folds=2)


def written(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def test_augment_split_is_bit_identical_whatever_the_order_and_threads(project):
    root, df = project
    chosen = settings(copies=2, seed=3, clahe=0.5, max_side=40)
    first = augment.augment_split(df, root, Path("a"), chosen, workers=1)
    second = augment.augment_split(df.sample(frac=1, random_state=9), root, root / "b", chosen,
                                   workers=3)
    assert written(root / "a") == written(root / "b") and len(written(root / "a")) == 24
    pd.testing.assert_frame_equal(first.drop(columns="path"), second.drop(columns="path"))
    other = augment.augment_split(df, root, Path("c"), settings(copies=2, seed=4, max_side=40))
    assert written(root / "a") != written(root / "c")
    assert len(other) == len(first)


def test_only_train_originals_are_augmented_with_contract_rows(project):
    root, df = project
    rows = augment.augment_split(df, root, Path("data/augmented/images"),
                                 settings(copies=3, max_side=32), workers=2)
    train = df[df["split"] == "train"]
    assert len(rows) == 3 * len(train) == 36
    assert set(rows["original_path"]) == set(train["path"])
    assert rows.groupby("original_path").size().eq(3).all()
    assert (rows["origin"] == "augmented").all() and (rows["split"] == "train").all()
    assert (rows["status"] == "ok").all() and (rows["channels"] == 3).all()
    assert (rows["n_boxes"] == 0).all() and rows["boxes"].map(len).eq(0).all()
    folds = train.set_index("path")["fold"]
    assert (rows["fold"].to_numpy() == folds[rows["original_path"]].to_numpy()).all()
    first = rows.iloc[0]
    assert first["path"] == "data/augmented/images/n02085620-Chihuahua/n02085620_1000_aug0.jpg"
    image = cv2.imread(str(root / first["path"]))
    assert image.shape == (first["height"], first["width"], 3) and max(image.shape) <= 32
    assert first["bytes"] == (root / first["path"]).stat().st_size
    # copies of an augmented row are never made (only originals are sources)
    again = augment.augment_split(augment.build_dataset(df, rows), root, Path("x"),
                                  settings(copies=1, max_side=32))
    assert len(again) == len(train)


def test_build_dataset_appends_augmented_rows_to_the_split(project):
    root, df = project
    rows = augment.augment_split(df, root, Path("aug"), settings(copies=1, max_side=32))
    dataset = augment.build_dataset(df, rows)
    assert list(dataset.columns) == list(df.columns)
    pd.testing.assert_frame_equal(dataset.iloc[: len(df)], df)
    assert augment.summarize(dataset) == {"rows": 30, "augmented": 12, "train_originals": 12,
                                          "train_total": 24}
    nothing = augment.augment_split(df, root, Path("none"), settings(copies=0))
    assert nothing.empty and not (root / "none").exists()
