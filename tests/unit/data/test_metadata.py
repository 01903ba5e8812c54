"""build_metadata: labels, sizes, boxes and the health check of every photo file."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from support import fakedata
from support.project import make_project, run_stage, stage_runs
from dogbreeds.data import metadata
from dogbreeds.tracking import store
from dogbreeds.profiles import apply_profile

CHIHUAHUA = "n02085620-Chihuahua"


def _rgb(height: int = 40, width: int = 50) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_bad_files(images_dir: Path) -> dict[str, tuple[str, str]]:
    """Odd files in the Chihuahua folder; returns {stem: (expected status, reason part)}."""
    folder = images_dir / CHIHUAHUA
    good = next(iter(sorted(folder.glob("*.jpg")))).read_bytes()
    rgb = _rgb()
    files = {
        "n02085620_1": (b"", "empty", "zero-byte"),
        "n02085620_2": (good[: len(good) // 2], "truncated", "end-of-image"),
        "n02085620_3": (_encoded(Image.fromarray(rgb), "PNG"), "converted", "PNG data (RGB)"),
        "n02085620_4": (_encoded(Image.fromarray(rgb[..., 0]), "JPEG"), "ok", ""),
        "n02085620_5": (_encoded(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "converted",
                        "CMYK JPEG"),
        "n02085620_6": (_encoded(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"),
                        "converted", "PNG data (RGBA)"),
        "n02085620_7": (b"this is a text file, not a photo\n", "unreadable", "not an image"),
        "n02085620_8": (_encoded(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
                        "converted", "I;16"),
        "n02085620_9": (_encoded(Image.fromarray(rgb).convert("P"), "GIF"), "converted",
                        "GIF data (P)"),
        "n02085620_10": (good + b"\x00" * 20, "ok", ""),  # padding after the EOI marker
    }
    for stem, (data, _, _) in files.items():
        (folder / f"{stem}.jpg").write_bytes(data)
    return {stem: (status, reason) for stem, (_, status, reason) in files.items()}


@pytest.fixture()
def raw(tmp_path) -> Path:
    fakedata.make_tree(tmp_path / "data" / "raw", per_breed=4)
    return tmp_path / "data" / "raw"


def test_parse_folder_splits_wnid_and_breed():
    assert metadata.parse_folder("n02085620-Chihuahua") == ("n02085620", "Chihuahua")
    assert metadata.parse_folder("n02099601-golden_retriever") == ("n02099601", "golden_retriever")
    assert metadata.parse_folder("n02113978-Mexican_hairless") == ("n02113978", "Mexican_hairless")
    with pytest.raises(ValueError, match="not a Stanford Dogs breed folder"):
        metadata.parse_folder("Chihuahua")


def test_build_metadata_rows_follow_the_contract(raw, tmp_path):
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path)
    assert list(df.columns) == metadata.COLUMNS
    assert len(df) == 12 and df["path"].is_monotonic_increasing
    first = df.iloc[0]
    assert first["path"] == "data/raw/Images/n02085620-Chihuahua/n02085620_1000.jpg"
    assert (first["breed"], first["wnid"], first["folder"]) == ("Chihuahua", "n02085620", CHIHUAHUA)
    assert (first["width"], first["height"], first["channels"], first["format"]) == (
        48, 48, 3, "JPEG")
    assert first["bytes"] == (tmp_path / first["path"]).stat().st_size
    assert (df["status"] == "ok").all() and (df["reason"] == "").all()
    assert (df["origin"] == "original").all() and (df["source"] == df["path"]).all()
    assert sorted(df["breed"].unique()) == ["Chihuahua", "golden_retriever", "papillon"]
    assert df["height"].tolist()[:4] == [48, 52, 56, 48]   # real header sizes, not a guess


def test_boxes_come_from_the_xml_and_bad_xml_gives_none(raw, tmp_path):
    annotations = raw / "Annotation" / CHIHUAHUA
    (annotations / "n02085620_1001").write_text("<annotation><object><bndbox><xmin>1")
    (annotations / "n02085620_1002").unlink()
    df = metadata.build_metadata(raw, ["Chihuahua"], relative_to=tmp_path).set_index("path")
    prefix = f"data/raw/Images/{CHIHUAHUA}/"
    assert df.loc[prefix + "n02085620_1000.jpg", "boxes"] == [[2, 3, 45, 46], [1, 1, 10, 12]]
    assert df.loc[prefix + "n02085620_1000.jpg", "n_boxes"] == 2
    assert df.loc[prefix + "n02085620_1003.jpg", "boxes"] == [[2, 3, 45, 46]]
    for stem in ("n02085620_1001", "n02085620_1002"):   # malformed, missing
        assert df.loc[prefix + stem + ".jpg", "boxes"] == []
        assert df.loc[prefix + stem + ".jpg", "status"] == "ok"


def test_breed_selection_and_unknown_breeds(raw):
    df = metadata.build_metadata(raw, ["papillon", "Chihuahua"])
    assert sorted(df["breed"].unique()) == ["Chihuahua", "papillon"]
    assert df["path"].iloc[0].startswith(raw.as_posix())  # no relative_to: paths as given
    with pytest.raises(ValueError, match=r"unknown breed\(s\) \['Poodle'\]; available: .*papillon"):
        metadata.build_metadata(raw, ["Poodle", "papillon"])
    with pytest.raises(FileNotFoundError, match="no Images/ folder"):
        metadata.build_metadata(raw.parent / "nowhere", "all")


def test_bad_files_get_a_status_and_odd_ones_are_converted(raw, tmp_path):
    expected = write_bad_files(raw / "Images")
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path)
    df = metadata.convert_images(df, tmp_path, Path("data/metadata/converted"))
    by_stem = df.set_index(df["source"].map(lambda p: Path(p).stem))
    for stem, (status, reason) in expected.items():
        row = by_stem.loc[stem]
        assert row["status"] == status, stem
        assert reason in row["reason"], (stem, row["reason"])
    assert by_stem.loc["n02085620_4", "channels"] == 1          # grayscale JPEG stays as is
    converted = df[df["status"] == "converted"]
    assert len(converted) == 5
    assert (converted["reason"].str.startswith("converted from ")).all()
    import tensorflow as tf  # noqa: PLC0415  (slow import: only this test needs it)

    for row in converted.itertuples():
        assert row.path == f"data/metadata/converted/{CHIHUAHUA}/{Path(row.source).stem}.jpg"
        assert row.source.startswith("data/raw/Images/")
        file = tmp_path / row.path
        assert file.read_bytes()[:2] == b"\xff\xd8" and row.bytes == file.stat().st_size
        assert cv2.imread(str(file)).shape == (40, 50, 3)
        assert tf.io.decode_jpeg(tf.io.read_file(str(file)), channels=3).shape == (40, 50, 3)
        assert Image.open(file).mode == "RGB"
    # the usable rows are exactly ok + converted; nothing else escapes
    assert set(metadata.usable(df)["status"]) == {"ok", "converted"}
    assert len(metadata.usable(df)) == 12 + 2 + 5
    summary = metadata.summarize(df)
    assert summary["status"] == {"ok": 14, "converted": 5, "needs_conversion": 0, "truncated": 1,
                                 "empty": 1, "unreadable": 1}
    assert summary["per_breed"]["Chihuahua"] == 4 + 2 + 5


def test_conversion_failure_marks_the_row_unreadable(raw, tmp_path):
    folder = raw / "Images" / CHIHUAHUA
    png = _encoded(Image.fromarray(_rgb()), "PNG")
    (folder / "n02085620_3.jpg").write_bytes(png[: len(png) // 2])  # header fine, data cut
    df = metadata.build_metadata(raw, ["Chihuahua"], relative_to=tmp_path)
    assert (df["status"] == "needs_conversion").sum() == 1
    df = metadata.convert_images(df, tmp_path, tmp_path / "conv")
    row = df[df["source"].str.endswith("n02085620_3.jpg")].iloc[0]
    assert row["status"] == "unreadable" and "decode failed" in row["reason"]
    assert str(tmp_path) not in row["reason"]   # the table must not depend on where it ran


def test_to_rgb_scales_16_bit_instead_of_clipping():
    gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(metadata.to_rgb(gray16))[0, :, 0].tolist() == [0, 128, 255]


def test_table_round_trip_keeps_boxes_typed_even_when_all_empty(tmp_path):
    df = metadata.as_table([{"path": "a.jpg", "breed": "x", "boxes": [], "width": 3}])
    metadata.write_table(df, tmp_path / "t.parquet")
    back = metadata.read_table(tmp_path / "t.parquet")
    assert back["boxes"].tolist() == [[]] and back["width"].tolist() == [3]
    df2 = metadata.as_table([{"path": "b.jpg", "boxes": [[1, 2, 3, 4]]}])
    metadata.write_table(pd.concat([df, df2]), tmp_path / "t2.parquet")
    assert metadata.read_table(tmp_path / "t2.parquet")["boxes"].tolist() == [[], [[1, 2, 3, 4]]]


def test_scan_speed_is_thousands_of_files_per_second(tmp_path):
    """Headers only: the real 20,580 files must take seconds, not minutes."""
    import time

    fakedata.make_tree(tmp_path / "raw", per_breed=150, size=64)
    start = time.perf_counter()
    df = metadata.build_metadata(tmp_path / "raw", "all")
    rate = len(df) / (time.perf_counter() - start)
    assert len(df) == 450 and rate > 500, f"{rate:.0f} files/s"


def stage_run_artifacts(project: Path, stage: str) -> tuple[mlflow.entities.Run, set[str]]:
    runs = stage_runs(project, stage)
    assert len(runs) == 1
    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    run = runs[0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    names |= {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    return run, names


def test_stage_writes_table_summary_converted_dir_and_mlflow_run(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    write_bad_files(project / "data" / "raw" / "Images")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  ["base.seed=7"])
    result = run_stage(project, "build_metadata")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usable" in result.stdout

    out = project / "data" / "metadata"
    df = metadata.read_table(out / "images.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(df) == 18 + 10
    assert summary["usable"] == 18 + 2 + 5 and summary["breeds"] == 3
    assert summary["status"]["converted"] == 5 and summary["status"]["empty"] == 1
    assert len(list((out / "converted" / CHIHUAHUA).glob("*.jpg"))) == 5
    index = pd.read_csv(out / "converted" / "index.csv")
    assert sorted(index["path"]) == sorted(df.loc[df["status"] == "converted", "path"])
    assert all((project / p).is_file() for p in metadata.usable(df)["path"])

    run, artifacts = stage_run_artifacts(project, "build_metadata")
    assert {"figures/breed_counts.png", "figures/sample_grid.png", "figures/image_sizes.png",
            "summary.json", "odd_files.csv", "images.parquet"} <= artifacts
    assert run.data.metrics["usable"] == 25 and run.data.metrics["status_truncated"] == 1
    assert run.data.params["data.breeds"] == "all"
    # a rerun replaces the converted copies instead of accumulating stale ones
    (out / "converted" / CHIHUAHUA / "stale.jpg").write_bytes(b"x")
    assert run_stage(project, "build_metadata").returncode == 0
    assert not (out / "converted" / CHIHUAHUA / "stale.jpg").exists()


def test_stage_with_an_unknown_breed_fails_with_a_clear_message(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", None, ["data.breeds=[Chihuahua, Husky]"])
    result = run_stage(project, "build_metadata")
    assert result.returncode != 0
    assert "unknown breed(s) ['Husky']" in result.stderr
