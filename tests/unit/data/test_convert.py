"""dogbreeds.data.convert: RGB JPEG copies of the odd files, readable by every decoder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dogbreeds.data import convert, metadata
from support import fakedata
from support.fakedata import CHIHUAHUA, encoded_image, random_rgb, write_bad_files


@pytest.fixture()
def raw(tmp_path) -> Path:
    fakedata.make_tree(tmp_path / "data" / "raw", per_breed=4)
    return tmp_path / "data" / "raw"


def test_bad_files_get_a_status_and_odd_ones_are_converted(raw, tmp_path):
    expected = write_bad_files(raw / "Images")
    df = metadata.build_metadata(raw, "all", relative_to=tmp_path)
    df = convert.convert_images(df, tmp_path, Path("data/metadata/converted"))
    by_stem = df.set_index(df["original_path"].map(lambda p: Path(p).stem))
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
        assert row.path == f"data/metadata/converted/{CHIHUAHUA}/{Path(row.original_path).stem}.jpg"
        assert row.original_path.startswith("data/raw/Images/")
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
    png = encoded_image(Image.fromarray(random_rgb()), "PNG")
    (folder / "n02085620_3.jpg").write_bytes(png[: len(png) // 2])  # header fine, data cut
    df = metadata.build_metadata(raw, ["Chihuahua"], relative_to=tmp_path)
    assert (df["status"] == "needs_conversion").sum() == 1
    df = convert.convert_images(df, tmp_path, tmp_path / "conv")
    row = df[df["original_path"].str.endswith("n02085620_3.jpg")].iloc[0]
    assert row["status"] == "unreadable" and "decode failed" in row["reason"]
    assert str(tmp_path) not in row["reason"]   # the table must not depend on where it ran


def test_to_rgb_scales_16_bit_instead_of_clipping():
    gray16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    assert np.asarray(convert.to_rgb(gray16))[0, :, 0].tolist() == [0, 128, 255]




def test_a_photo_stored_sideways_gets_an_upright_copy_like_inference_sees_it(raw, tmp_path):
    """No skew: the training copy of an EXIF-rotated JPEG decodes (TF, as training does) to
    what serving makes of the original file."""
    import tensorflow as tf  # noqa: PLC0415  (slow import: only these tests need it)
    from PIL import ImageFilter

    from dogbreeds.data import photos, preprocess

    # 50×40, smooth like a photo (JPEG re-encoding of pure noise loses more than a photo)
    upright = Image.fromarray(random_rgb()).filter(ImageFilter.GaussianBlur(2))
    exif = Image.Exif()
    exif[photos.EXIF_ORIENTATION] = 6
    path = raw / "Images" / CHIHUAHUA / "n02085620_3.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95,
                                                      exif=exif.tobytes())
    df = metadata.build_metadata(raw, ["Chihuahua"], relative_to=tmp_path)
    row = df[df["original_path"].str.endswith("n02085620_3.jpg")].iloc[0]
    assert (row["status"], row["reason"]) == ("needs_conversion", "EXIF orientation 6")
    df = convert.convert_images(df, tmp_path, Path("conv"))
    row = df[df["original_path"].str.endswith("n02085620_3.jpg")].iloc[0]
    assert row["status"] == "converted" and (row["width"], row["height"]) == upright.size
    trained = preprocess.load_image(tf.constant(str(tmp_path / row["path"])), 24).numpy()
    served = preprocess.load_bytes(path.read_bytes(), 24)
    assert np.abs(trained - served).mean() < 2  # the same pixels, up to one JPEG re-encode
    unturned = preprocess.resize(preprocess.decode_image(tf.constant(path.read_bytes())), 24)
    assert np.abs(trained - unturned.numpy()).mean() > 2 * np.abs(trained - served).mean()
    assert photos.read_header((tmp_path / row["path"]).read_bytes()).orientation == 1
