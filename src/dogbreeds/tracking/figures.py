"""Matplotlib figures the stages log to MLflow (``mlflow.log_figure``) or save as PNG.

Every function returns a :class:`matplotlib.figure.Figure` bound to an Agg canvas and never
touches ``pyplot``: no global figure registry, nothing to close, safe in threads and in
headless runs. Save with ``fig.savefig(path)`` or ``mlflow.log_figure(fig, "name.png")``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width × height`` inches on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def load_thumbnail(path: Path, max_side: int = 256) -> np.ndarray:
    """RGB uint8 thumbnail of an image file (cheap: JPEG draft mode decodes at low scale)."""
    with Image.open(path) as image:
        image.draft("RGB", (max_side, max_side))
        image = image.convert("RGB")
        image.thumbnail((max_side, max_side))
        return np.asarray(image)


def count_bars(counts: Mapping[str, int], title: str, xlabel: str = "images") -> Figure:
    """Horizontal bars, one per key (e.g. photos per breed), labelled with their count."""
    names = list(counts)
    values = [counts[n] for n in names]
    fig = new_figure(7, max(2.0, 0.28 * len(names) + 1.0))
    ax = fig.add_subplot()
    bars = ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.bar_label(bars, fontsize=7, padding=2)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return fig


def grouped_count_bars(table: Mapping[str, Mapping[str, int]], title: str,
                       xlabel: str = "images") -> Figure:
    """Horizontal bars per row key, one colour per column key (e.g. breed × split)."""
    rows = list(table)
    groups = list(dict.fromkeys(g for counts in table.values() for g in counts))  # given order
    fig = new_figure(7, max(2.5, 0.35 * len(rows) * max(1, len(groups)) / 2 + 1.0))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(groups))
    for i, group in enumerate(groups):
        positions = [r + i * height for r in range(len(rows))]
        ax.barh(positions, [table[r].get(group, 0) for r in rows], height=height, label=group)
    ax.set_yticks([r + 0.4 - height / 2 for r in range(len(rows))],
                  [r.replace("_", " ") for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4,
               title: str | None = None) -> Figure:
    """Images (RGB uint8) in a grid, each with its title (e.g. the breed)."""
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    fig = new_figure(2.4 * columns, 2.5 * rows)
    for index, (image, label) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(image)
        ax.set_title(label.replace("_", " "), fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def size_histogram(widths: Sequence[int], heights: Sequence[int], bins: int = 30) -> Figure:
    """Distributions of image width and height (pixels), overlaid."""
    fig = new_figure(6, 3.5)
    ax = fig.add_subplot()
    ax.hist(widths, bins=bins, alpha=0.6, label="width")
    ax.hist(heights, bins=bins, alpha=0.6, label="height")
    ax.set_xlabel("pixels")
    ax.set_ylabel("images")
    ax.set_title("Image sizes")
    ax.legend()
    return fig


def augmentation_rows(originals: Sequence[np.ndarray], augmented: Sequence[Sequence[np.ndarray]],
                      labels: Sequence[str]) -> Figure:
    """One row per photo: the original, then its augmented copies (all RGB uint8)."""
    columns = 1 + max((len(copies) for copies in augmented), default=0)
    rows = max(1, len(originals))
    fig = new_figure(2.2 * columns, 2.3 * rows)
    for r, (original, copies, label) in enumerate(zip(originals, augmented, labels, strict=True)):
        for c, image in enumerate([original, *copies]):
            ax = fig.add_subplot(rows, columns, r * columns + c + 1)
            ax.imshow(image)
            ax.set_title(label.replace("_", " ") if c == 0 else f"augmented {c}", fontsize=8)
            ax.axis("off")
    return fig


def training_curves(history) -> Figure:
    """Loss and accuracy per epoch, train vs validation (a ``history.csv`` DataFrame).

    With a ``phase`` column (transfer learning: head, then fine-tune) a dashed line marks
    where each later phase starts.
    """
    fig = new_figure(10, 3.8)
    axes = fig.subplots(1, 2)
    epochs = history["epoch"].to_numpy()
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for column, label in ((metric, "train"), (f"val_{metric}", "validation")):
            if column in history and history[column].notna().any():
                ax.plot(epochs, history[column].to_numpy(dtype=float), marker="o",
                        markersize=3, label=label)
        if "phase" in history:
            starts = history.loc[history["phase"] != history["phase"].shift(), "epoch"]
            for start in list(starts)[1:]:
                ax.axvline(start - 0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix_figure(cm: np.ndarray, classes: Sequence[str],
                            title: str = "Confusion matrix (row-normalised)") -> Figure:
    """Row-normalised confusion matrix (rows: actual breed, columns: predicted).

    Readable from a handful of classes to all 120: cells, fonts and the figure scale with the
    class count, and per-cell percentages are only written while they fit (≤ 30 classes).
    """
    cm = np.asarray(cm, dtype=float)
    n = len(classes)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} classes")
    totals = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    cell = max(0.2, min(0.5, 6.0 / max(1, n)))          # inches per cell
    side = min(32.0, max(5.0, n * cell + 3.0))
    label_size = max(4.0, min(10.0, cell * 72 * 0.5))
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    names = [c.replace("_", " ") for c in classes]
    ax.set_xticks(range(n), names, rotation=90, fontsize=label_size)
    ax.set_yticks(range(n), names, fontsize=label_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=max(10.0, label_size + 2))
    if n <= 30:
        cell_size = max(5.0, min(9.0, cell * 72 * 0.35))
        for i in range(n):
            for j in range(n):
                if cm[i, j] > 0:
                    ax.text(j, i, f"{rates[i, j]:.0%}", ha="center", va="center",
                            fontsize=cell_size, color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01, label="share of the actual breed")
    return fig
