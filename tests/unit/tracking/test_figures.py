"""figures: every function returns a drawable Figure and leaves no pyplot state behind."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from dogbreeds.tracking import figures

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, (30 + 5 * i, 40, 3), dtype=np.uint8) for i in range(5)]


def png_size(fig: Figure) -> tuple[int, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return Image.open(io.BytesIO(buf.getvalue())).size


@pytest.mark.parametrize("make, axes", [
    (lambda: figures.count_bars({"Chihuahua": 5, "golden_retriever": 12}, "Per breed"), 1),
    (lambda: figures.grouped_count_bars({"a": {"train": 5, "val": 1}, "b": {"train": 4}}, "t"), 1),
    (lambda: figures.image_grid(IMAGES, [f"dog_{i}" for i in range(5)], columns=2,
                                title="grid"), 5),
    (lambda: figures.size_histogram([500, 375, 333], [375, 500, 250]), 1),
    (lambda: figures.augmentation_rows(IMAGES[:2], [IMAGES[2:4], IMAGES[3:5]], ["a", "b"]), 6),
])
def test_figures_render_to_png_without_pyplot_state(make, axes):
    before = plt.get_fignums()
    fig = make()
    assert isinstance(fig, Figure) and len(fig.axes) == axes
    width, height = png_size(fig)
    assert width > 100 and height > 100
    assert plt.get_fignums() == before   # nothing registered in pyplot: nothing to leak


def test_count_bars_shows_every_count_as_a_label():
    fig = figures.count_bars({"a_b": 3, "c": 7}, "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a b", "c"]
    assert sorted(t.get_text() for t in ax.texts) == ["3", "7"]


def test_load_thumbnail_is_rgb_and_bounded(tmp_path):
    Image.fromarray(IMAGES[0][..., 0]).resize((400, 300)).save(tmp_path / "g.jpg")
    thumb = figures.load_thumbnail(tmp_path / "g.jpg", max_side=64)
    assert thumb.dtype == np.uint8 and thumb.shape[2] == 3 and max(thumb.shape[:2]) == 64


@pytest.mark.parametrize("n", [3, 120])
def test_confusion_matrix_figure_scales_with_classes(n, tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(1, 4, (n, n)) + np.eye(n, dtype=int) * 20
    classes = [f"breed_{i}" for i in range(n)]
    fig = figures.confusion_matrix_figure(cm, classes)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [c.replace("_", " ") for c in classes]
    assert len(ax.get_yticklabels()) == n
    width, height = fig.get_size_inches()
    assert (width, height) == ((6.0, 5.0) if n == 3 else (28.0, 27.0))
    assert (len(ax.texts) == 9) if n == 3 else (len(ax.texts) == 0)  # no per-cell numbers at 120
    fig.savefig(tmp_path / "cm.png", dpi=50)
    assert (tmp_path / "cm.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="does not match"):
        figures.confusion_matrix_figure(cm, classes[:-1])
