"""Offline augmentation (OpenCV): extra, slightly different copies of the training photos.

Only original photos of the ``train`` split are augmented, so validation and test stay
real photos and no augmented copy of a test photo can leak into training.

Reproducibility: copy ``k`` of photo ``p`` draws its random numbers from a generator seeded
with a SHA-256 of ``(seed, p's path, k)``. The pixels therefore depend on nothing else —
not on the processing order, the number of threads, or Python's salted ``hash()`` — and a
rerun writes bit-identical files (OpenCV's resize, warp, CLAHE and JPEG encoder are
deterministic).

This is not the model's preprocessing (that is :mod:`dogbreeds.data.preprocess`): the written
copies are ordinary JPEGs that go through the same preprocessing as every other photo.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dogbreeds.data.metadata import USABLE_STATUSES
from dogbreeds.data.tables import as_table
from dogbreeds.hashing import stable_seed
from dogbreeds.settings import from_section, section

# tf.io.decode_jpeg ignores EXIF orientation; OpenCV applies it unless told not to. Reading
# without it keeps augmented copies oriented like the model sees the original.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


@dataclass(frozen=True)
class AugmentSettings:
    """How the copies are made: the ``augment`` params (see params.yaml for each one's
    meaning) but ``enabled`` and ``output``."""

    copies: int
    seed: int
    rotation: float
    hflip: float
    zoom: tuple[float, float]
    aspect: tuple[float, float]
    clahe: float
    max_side: int
    jpeg_quality: int

    def __post_init__(self) -> None:
        problems = []
        if self.copies < 0:
            problems.append(f"copies={self.copies} < 0")
        for name in ("zoom", "aspect"):
            if len(getattr(self, name)) != 2:
                problems.append(f"{name}={list(getattr(self, name))} must be [low, high]")
        if len(self.zoom) == 2 and not (0 < self.zoom[0] <= self.zoom[1] <= 1):
            problems.append(f"zoom={list(self.zoom)} must satisfy 0 < low <= high <= 1")
        if len(self.aspect) == 2 and not (0 < self.aspect[0] <= self.aspect[1]):
            problems.append(f"aspect={list(self.aspect)} must satisfy 0 < low <= high")
        for name in ("hflip", "clahe"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}={getattr(self, name)} is not a probability")
        if self.max_side < 8:
            problems.append(f"max_side={self.max_side} < 8")
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality={self.jpeg_quality} not in 1..100")
        if problems:
            raise ValueError("invalid augment settings: " + "; ".join(problems))

    @classmethod
    def from_params(cls, values: Mapping[str, Any]) -> AugmentSettings:
        """Build from the ``augment`` params section (extra keys such as ``output`` ignored)."""
        return from_section(cls, values, "augment")


@dataclass(frozen=True)
class AugmentStageSettings:
    """The whole ``augment`` section: whether to write copies, where, and how."""

    enabled: bool
    output: Path
    images: AugmentSettings

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AugmentStageSettings:
        values = section(params, "augment")
        return from_section(cls, values, "augment", images=AugmentSettings.from_params(values))


def image_rng(seed: int, path: str, copy: int) -> np.random.Generator:
    """The generator of copy ``copy`` of the photo at ``path`` (see module docstring)."""
    return np.random.default_rng(stable_seed(seed, path, copy))


def clahe_lab(image: np.ndarray) -> np.ndarray:
    """CLAHE on the lightness channel (LAB) of a BGR image: local contrast, hues unchanged."""
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILES)
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def augment_image(image: np.ndarray, rng: np.random.Generator,
                  settings: AugmentSettings) -> np.ndarray:
    """One random variant of a BGR uint8 image ``[H, W, 3]``.

    Rotation (reflected border, so no black corners) → crop of a random ``zoom`` fraction of
    each side → width stretch by ``aspect`` and a resize so the longer side is at most
    ``max_side`` (never enlarged beyond the stretch) → optional horizontal flip → optional
    CLAHE. Every random number is drawn
    up front in a fixed order, so one draw never shifts another.

    Raises:
        ValueError: when ``image`` is not ``[H, W, 3]`` uint8.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    angle = rng.uniform(-settings.rotation, settings.rotation)
    keep = rng.uniform(*settings.zoom)
    stretch = rng.uniform(*settings.aspect)
    crop_x, crop_y = rng.random(2)
    flip = rng.random() < settings.hflip
    equalize = rng.random() < settings.clahe

    height, width = image.shape[:2]
    # Big photos are shrunk to about their final scale first: rotating, cropping and
    # equalizing a 2000 px image only to throw most pixels away costs 10x more.
    shrink = settings.max_side / max(width * keep * stretch, height * keep)
    if shrink < 1:
        image = cv2.resize(image, (max(1, round(width * shrink)), max(1, round(height * shrink))),
                           interpolation=cv2.INTER_AREA)
        height, width = image.shape[:2]
    if angle:
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
    crop_w, crop_h = max(1, round(width * keep)), max(1, round(height * keep))
    x0 = min(int(crop_x * (width - crop_w + 1)), width - crop_w)
    y0 = min(int(crop_y * (height - crop_h + 1)), height - crop_h)
    image = image[y0:y0 + crop_h, x0:x0 + crop_w]

    target_w, target_h = crop_w * stretch, float(crop_h)
    scale = min(1.0, settings.max_side / max(target_w, target_h))
    size = (max(1, round(target_w * scale)), max(1, round(target_h * scale)))
    if size != (crop_w, crop_h):
        shrinking = size[0] * size[1] < crop_w * crop_h
        image = cv2.resize(image, size,
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if flip:
        image = cv2.flip(image, 1)
    if equalize:
        image = clahe_lab(image)
    return np.ascontiguousarray(image)


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` of an image file (grayscale expanded, EXIF orientation ignored).

    Raises:
        ValueError: when OpenCV cannot decode the file.
    """
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), IMREAD_FLAGS)
    if image is None:
        raise ValueError(f"OpenCV cannot decode {path}")
    return image


def write_jpeg(image: np.ndarray, path: Path, quality: int) -> int:
    """Write a BGR image as a JPEG; return its size in bytes."""
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return len(encoded)


def augmented_path(out_rel: Path, folder: str, original: str, copy: int) -> Path:
    """``<out>/<folder>/<stem>_aug<k>.jpg`` (relative to the project root)."""
    return out_rel / folder / f"{Path(original).stem}_aug{copy}.jpg"


def training_originals(df: pd.DataFrame) -> pd.DataFrame:
    """The rows augmentation works from: usable original photos of the train split."""
    mask = ((df["split"] == "train") & (df["origin"] == "original")
            & df["status"].isin(USABLE_STATUSES))
    return df[mask].sort_values("path")


def _augment_one(row: Mapping[str, Any], root: Path, out_rel: Path,
                 settings: AugmentSettings) -> list[dict[str, Any]]:
    image = read_image(root / row["path"])
    rows = []
    for copy in range(settings.copies):
        augmented = augment_image(image, image_rng(settings.seed, row["path"], copy), settings)
        rel = augmented_path(out_rel, row["folder"], row["path"], copy)
        size = write_jpeg(augmented, root / rel, settings.jpeg_quality)
        rows.append({**row, "path": rel.as_posix(), "width": augmented.shape[1],
                     "height": augmented.shape[0], "channels": 3, "format": "JPEG",
                     "bytes": size, "boxes": [], "n_boxes": 0, "status": "ok", "reason": "",
                     "origin": "augmented", "split": "train", "original_path": row["path"]})
    return rows


def augment_split(df: pd.DataFrame, project_root: Path, out_dir: Path,
                  settings: AugmentSettings, workers: int = 2) -> pd.DataFrame:
    """Write ``settings.copies`` augmented JPEGs per training original; return their rows.

    Args:
        df: The split table (``split.parquet``); paths relative to ``project_root``.
        project_root: Folder the paths are relative to.
        out_dir: Folder receiving ``<folder>/<stem>_aug<k>.jpg``, relative to
            ``project_root`` (or absolute inside it).
        settings: What to randomise and how much.
        workers: Threads (OpenCV releases the GIL); the output does not depend on it.

    Returns:
        One row per written file (the source row's columns; ``origin="augmented"``,
        ``original_path`` = the original's path, ``fold`` = the original's fold), sorted by path.
    """
    root = Path(project_root)
    out_rel = (root / out_dir).relative_to(root)
    originals = training_originals(df).to_dict("records")
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        batches = list(pool.map(lambda row: _augment_one(row, root, out_rel, settings), originals))
    rows = [row for batch in batches for row in batch]
    columns = list(df.columns)
    table = as_table(pd.DataFrame(rows, columns=columns) if rows else df.iloc[0:0])
    return table.sort_values("path", ignore_index=True)


def build_dataset(split_df: pd.DataFrame, augmented: pd.DataFrame) -> pd.DataFrame:
    """``dataset.parquet``: the split rows, then the augmented rows."""
    return pd.concat([split_df, augmented[split_df.columns]], ignore_index=True)


def summarize(dataset: pd.DataFrame) -> dict[str, Any]:
    """Counts for the stage's metrics: originals, augmented copies, training rows."""
    augmented = dataset["origin"] == "augmented"
    return {
        "rows": int(len(dataset)),
        "augmented": int(augmented.sum()),
        "train_originals": int(((dataset["split"] == "train") & ~augmented).sum()),
        "train_total": int((dataset["split"] == "train").sum()),
    }


def preview(augmented: pd.DataFrame, project_root: Path, count: int,
            seed: int) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[str]]:
    """A few originals (RGB) with their written copies, chosen with ``seed``, for a figure."""
    sources = sorted(augmented["original_path"].unique())
    chosen = np.random.default_rng(seed).choice(len(sources), size=min(count, len(sources)),
                                                replace=False) if sources else []
    originals, copies, labels = [], [], []
    for index in sorted(chosen):
        source = sources[index]
        originals.append(_rgb(read_image(Path(project_root) / source)))
        paths = augmented.loc[augmented["original_path"] == source].sort_values("path")
        copies.append([_rgb(read_image(Path(project_root) / p)) for p in paths["path"]])
        labels.append(str(paths["breed"].iloc[0]))
    return originals, copies, labels


def _rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
