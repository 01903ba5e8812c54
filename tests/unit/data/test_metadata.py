"""dogbreeds.data.metadata: labels, sizes, boxes and the health check of every photo file."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dogbreeds.data import metadata, tables
from dogbreeds.data.convert import convert_images
from dogbreeds.data.sources import LocalSource, UnknownLabelError
from dogbreeds.settings import SettingsError
from support import fakedata
from support.fakedata import CHIHUAHUA, write_bad_files
from support.project import REMOVED, repo_params


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
    assert list(df.columns) == tables.COLUMNS
    assert len(df) == 12 and df["path"].is_monotonic_increasing
    first = df.iloc[0]
    assert first["path"] == "data/raw/Images/n02085620-Chihuahua/n02085620_1000.jpg"
    assert (first["breed"], first["wnid"], first["folder"]) == ("Chihuahua", "n02085620", CHIHUAHUA)
    assert (first["width"], first["height"], first["channels"], first["format"]) == (
        48, 48, 3, "JPEG")
    assert first["bytes"] == (tmp_path / first["path"]).stat().st_size
    assert (df["status"] == "ok").all() and (df["reason"] == "").all()
    assert (df["origin"] == "original").all() and (df["original_path"] == df["path"]).all()
    assert (df["source"] == "stanford").all() and not df["new_class"].any()
    assert sorted(df["breed"].unique()) == ["Chihuahua", "golden_retriever", "papillon"]
    assert df["height"].tolist()[:4] == [48, 52, 56, 48]   # real header sizes, not a guess
    assert first["sha256"] == fakedata.sha256(tmp_path / first["path"]) and df["sha256"].is_unique


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


def test_every_odd_file_gets_its_status_and_reason(raw, tmp_path):
    expected = write_bad_files(raw / "Images")
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path)
    by_stem = df.set_index(df["original_path"].map(lambda p: Path(p).stem))
    for stem, (status, reason) in expected.items():
        row = by_stem.loc[stem]
        want = metadata.NEEDS_CONVERSION if status == metadata.CONVERTED else status
        assert row["status"] == want, stem
        assert reason in row["reason"], (stem, row["reason"])
    assert str(tmp_path) not in "".join(df["reason"])   # the table must not depend on where
    assert set(metadata.usable(df)["status"]) == {"ok"}


def test_scan_speed_is_thousands_of_files_per_second(tmp_path):
    """Headers only: the real 20,580 files must take seconds, not minutes."""
    import time

    fakedata.make_tree(tmp_path / "raw", per_breed=150, size=64)
    start = time.perf_counter()
    df = metadata.build_metadata(tmp_path / "raw", "all")
    rate = len(df) / (time.perf_counter() - start)
    assert len(df) == 450 and rate > 500, f"{rate:.0f} files/s"


def local_source(name="shelter", test_only=False, new_classes=("mixed", "not_a_dog")):
    return LocalSource(name, Path("data/sources") / name, test_only, tuple(new_classes))


def test_local_source_photos_join_the_table_with_their_source(raw, tmp_path):
    folder = tmp_path / "data" / "sources" / "shelter"
    fakedata.make_source(folder, {"papillon": 3, "mixed": 2})
    (folder / "papillon" / "kennel").mkdir()
    (folder / "papillon" / "kennel" / "photo.jpg").write_bytes(
        fakedata.encoded_image(Image.fromarray(fakedata.random_rgb()), "PNG"))   # odd: converted
    (folder / "papillon" / "broken.jpg").write_bytes(b"")                       # bad: recorded
    (folder / ".gitkeep").write_bytes(b"")
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path, local=[local_source()])
    local = df[df["source"] == "shelter"].set_index("path")
    assert len(df) == 12 + 7 and (df.loc[df["source"] != "shelter", "source"] == "stanford").all()
    row = local.loc["data/sources/shelter/papillon/papillon_0.jpg"]
    assert (row["breed"], row["wnid"], row["folder"], row["status"]) == (
        "papillon", "n02086910", "shelter/papillon", "ok")
    assert not row["new_class"] and row["original_path"] == row.name and row["n_boxes"] == 0
    mixed = local[local["breed"] == "mixed"]
    assert len(mixed) == 2 and mixed["new_class"].all() and (mixed["wnid"] == "").all()
    assert local.loc["data/sources/shelter/papillon/broken.jpg", "status"] == "empty"
    assert local.loc["data/sources/shelter/papillon/kennel/photo.jpg", "status"] == \
        "needs_conversion"
    assert local.loc["data/sources/shelter/papillon/kennel/photo.jpg", "folder"] == \
        "shelter/papillon/kennel"

    converted = convert_images(df, tmp_path, Path("data/metadata/converted"))
    raw = "data/sources/shelter/papillon/kennel/photo.jpg"
    photo = converted[converted["original_path"] == raw]
    assert photo["path"].tolist() == ["data/metadata/converted/shelter/papillon/kennel/photo.jpg"]
    assert photo["status"].tolist() == ["converted"]
    # The hash is the raw file's (what a copy of it would have), not the converted JPEG's.
    assert photo["sha256"].tolist() == [fakedata.sha256(tmp_path / raw)]
    assert local.loc["data/sources/shelter/papillon/broken.jpg", "sha256"] == ""   # never usable

    summary = metadata.summarize(converted, ["stanford", "shelter", "feedback"])
    assert summary["breeds"] == 3 and summary["per_breed"]["mixed"] == 2
    assert summary["per_source"] == {
        "feedback": {"images": 0, "usable": 0, "new_class": 0},
        "shelter": {"images": 7, "usable": 6, "new_class": 2},
        "stanford": {"images": 12, "usable": 12, "new_class": 0}}


def test_a_misspelt_folder_fails_before_reading_and_suggests_the_breed(raw, tmp_path):
    folder = tmp_path / "data" / "sources" / "shelter"
    fakedata.make_source(folder, {"papillon": 1, "golden_retreiver": 1})
    with pytest.raises(UnknownLabelError, match=r"shelter/golden_retreiver: did you mean "
                                                r"'golden_retriever'\?"):
        metadata.build_metadata(raw, "all", relative_to=tmp_path, local=[local_source()])
    # A Stanford breed left out of data.breeds is not trained: said so.
    with pytest.raises(UnknownLabelError, match=r"shelter/papillon: a Stanford Dogs breed that "
                                                r"data\.breeds leaves out"):
        metadata.build_metadata(raw, ["Chihuahua", "golden_retriever"], relative_to=tmp_path,
                                local=[local_source()])


def test_a_source_without_its_folder_adds_nothing(raw, tmp_path):
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path, local=[local_source()])
    assert len(df) == 12 and set(df["source"]) == {"stanford"}


def test_settings_from_params_yaml():
    params = repo_params()
    settings = metadata.MetadataSettings.from_params(params)
    assert settings.breeds == tuple(params["data"]["breeds"])
    assert settings.raw_dir == Path("data/raw") and settings.output == Path("data/metadata")
    assert (settings.sample_grid, settings.seed) == (16, params["base"]["seed"])
    assert [s.name for s in settings.sources] == ["feedback"]
    params["data"]["breeds"] = "all"
    assert metadata.MetadataSettings.from_params(params).breeds == "all"


@pytest.mark.parametrize("dotted, bad, message", [
    ("data.breeds", "some", r"data\.breeds: 'some' matches none of"),
    ("data.breeds", ["beagle", 3], r"data\.breeds: \['beagle', 3\] matches none of"),
    ("build_metadata.sample_grid", 1.5, r"build_metadata\.sample_grid: expected an integer"),
    ("base.seed", "x", r"base\.seed: expected an integer"),
    ("build_metadata.output", REMOVED, r"missing build_metadata\.output"),
    ("data.sources", REMOVED, r"missing data\.sources"),
    ("data.sources_dir", REMOVED, r"missing data\.sources_dir"),
])
def test_a_bad_setting_names_its_key(dotted, bad, message):
    with pytest.raises(SettingsError, match=message):
        metadata.MetadataSettings.from_params(repo_params(dotted, bad))
