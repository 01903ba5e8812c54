"""Tiny synthetic data in the exact Stanford Dogs layout, made by the tests.

Each breed gets its own hue and stripe orientation, so a small model can learn to tell them
apart in a few epochs (a learnable toy task), while the files keep the real layout:
``Images/<wnid>-<Breed>/<wnid>_<n>.jpg``, ``Annotation/<wnid>-<Breed>/<wnid>_<n>`` (VOC XML),
and ``lists.tar`` with MATLAB ``.mat`` lists written by scipy.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from PIL import Image

BREEDS = {
    "n02085620": "Chihuahua",
    "n02086910": "papillon",
    "n02099601": "golden_retriever",
}


@dataclass(frozen=True)
class FakeDataset:
    root: Path                 # folder holding Images/ and Annotation/
    archives: Path             # folder holding images.tar, annotation.tar, lists.tar
    breeds: dict[str, str]     # wnid -> breed
    per_breed: int

    @property
    def n_images(self) -> int:
        return len(self.breeds) * self.per_breed

    def checksums(self) -> dict[str, str]:
        return {p.name: sha256(p) for p in sorted(self.archives.glob("*.tar"))}


def sha256(path: Path) -> str:
    """An oracle for the download tests, deliberately not the library's own hashing."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def breed_image(class_index: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A BGR uint8 image whose hue and stripe direction identify the class."""
    hue = (class_index * 47) % 180
    hsv = np.zeros((size, size, 3), np.uint8)
    hsv[..., 0] = hue
    hsv[..., 1] = 200
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = (xx if class_index % 2 == 0 else yy) // max(2, size // 8) % 2
    hsv[..., 2] = np.where(stripes, 220, 90)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.int16)
    img += rng.integers(-25, 26, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def annotation_xml(folder: str, stem: str, width: int, height: int, breed: str,
                   boxes: list[tuple[int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>{breed}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for x0, y0, x1, y1 in boxes
    )
    return (
        f"<annotation><folder>{folder}</folder><filename>{stem}</filename>"
        f"<source><database>ImageNet database</database></source>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segment>0</segment>{objects}</annotation>"
    )


def make_tree(root: Path, breeds: dict[str, str] | None = None, per_breed: int = 6,
              size: int = 48, seed: int = 0) -> dict[str, list[str]]:
    """Write Images/ and Annotation/ under ``root``; return {folder: [relative image paths]}."""
    breeds = breeds or BREEDS
    rng = np.random.default_rng(seed)
    files: dict[str, list[str]] = {}
    for index, (wnid, breed) in enumerate(breeds.items()):
        folder = f"{wnid}-{breed}"
        (root / "Images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "Annotation" / folder).mkdir(parents=True, exist_ok=True)
        files[folder] = []
        for n in range(per_breed):
            stem = f"{wnid}_{1000 + n}"
            h = size + (n % 3) * 4        # a few different sizes, like real photos
            img = cv2.resize(breed_image(index, rng, size), (size, h))
            (root / "Images" / folder / f"{stem}.jpg").write_bytes(jpeg_bytes(img))
            boxes = [(2, 3, size - 3, h - 2)] + ([(1, 1, 10, 12)] if n % 4 == 0 else [])
            (root / "Annotation" / folder / stem).write_text(
                annotation_xml(folder, stem, size, h, breed, boxes))
            files[folder].append(f"{folder}/{stem}.jpg")
    return files


def make_source(folder: Path, counts: dict[str, int], size: int = 48,
                seed: int = 1) -> list[Path]:
    """A local photo source (``data.sources``): ``<folder>/<label>/<label>_<n>.jpg``.

    A label that is a breed of :data:`BREEDS` gets that breed's hue and stripes (the same
    learnable toy task); any other label (``mixed``, ``not_a_dog``) a class of its own.
    """
    rng = np.random.default_rng(seed)
    names = list(BREEDS.values())
    written = []
    for label, n in counts.items():
        index = names.index(label) if label in names else len(names) + len(label)
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = folder / label / f"{label}_{i}.jpg"
            path.write_bytes(jpeg_bytes(breed_image(index, rng, size)))
            written.append(path)
    return written


def _mat_bytes(files: list[str], labels: list[int]) -> bytes:
    buf = io.BytesIO()
    # Same structure as the official lists: (N, 1) cells, each a 1-element string array.
    file_list = np.empty((len(files), 1), dtype=object)
    annotation_list = np.empty((len(files), 1), dtype=object)
    for i, f in enumerate(files):
        file_list[i, 0] = np.array([f])
        annotation_list[i, 0] = np.array([f[:-4]])
    scipy.io.savemat(buf, {
        "file_list": file_list,
        "annotation_list": annotation_list,
        "labels": np.array(labels, dtype=np.uint8).reshape(-1, 1),
    })
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_600_000_000
    tar.addfile(info, io.BytesIO(data))


def make_lists_tar(path: Path, files: dict[str, list[str]], train_per_breed: int) -> None:
    """lists.tar with file_list.mat, train_list.mat, test_list.mat (1-based labels)."""
    all_files, all_labels, train, train_labels, test, test_labels = [], [], [], [], [], []
    for label, folder in enumerate(sorted(files), start=1):
        for i, f in enumerate(sorted(files[folder])):
            all_files.append(f)
            all_labels.append(label)
            (train if i < train_per_breed else test).append(f)
            (train_labels if i < train_per_breed else test_labels).append(label)
    with tarfile.open(path, "w") as tar:
        _add_bytes(tar, "file_list.mat", _mat_bytes(all_files, all_labels))
        _add_bytes(tar, "train_list.mat", _mat_bytes(train, train_labels))
        _add_bytes(tar, "test_list.mat", _mat_bytes(test, test_labels))


def make_archives(workdir: Path, breeds: dict[str, str] | None = None, per_breed: int = 6,
                  size: int = 48, with_lists: bool = True, with_annotation: bool = True,
                  seed: int = 0) -> FakeDataset:
    """Build a tree under ``workdir/tree`` and pack it into ``workdir/archives/*.tar``."""
    breeds = breeds or BREEDS
    tree = workdir / "tree"
    files = make_tree(tree, breeds, per_breed, size, seed)
    archives = workdir / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archives / "images.tar", "w") as tar:
        tar.add(tree / "Images", arcname="Images")
    if with_annotation:
        with tarfile.open(archives / "annotation.tar", "w") as tar:
            tar.add(tree / "Annotation", arcname="Annotation")
    if with_lists:
        make_lists_tar(archives / "lists.tar", files, train_per_breed=max(1, per_breed * 2 // 3))
    return FakeDataset(root=tree, archives=archives, breeds=dict(breeds), per_breed=per_breed)


def dataset_frame(root: Path, files: dict[str, list[str]], val: int = 2, test: int = 2):
    """A ``dataset.parquet``-like DataFrame over a :func:`make_tree` tree (paths relative to
    ``root``, the tree's parent of ``Images/``): per breed the last ``test`` images are
    test, the ``val`` before them val, the rest train; all ``origin == "original"``."""
    import pandas as pd

    rows = []
    for folder, paths in sorted(files.items()):
        wnid, breed = folder.split("-", 1)
        for i, rel in enumerate(sorted(paths)):
            split = ("test" if i >= len(paths) - test
                     else "val" if i >= len(paths) - test - val else "train")
            path = f"Images/{rel}"
            rows.append({"path": path, "breed": breed, "wnid": wnid, "folder": folder,
                         "split": split, "fold": -1, "origin": "original", "source": "stanford",
                         "original_path": path,
                         "status": "ok"})
    return pd.DataFrame(rows)


def dataset_tree(root: Path, per_breed: int, size: int, val: int, test: int):
    """A :func:`make_tree` tree under ``root`` and its :func:`dataset_frame` table."""
    return root, dataset_frame(root, make_tree(root, per_breed=per_breed, size=size),
                               val=val, test=test)


# --------------------------------------------------------------------------- odd photo files

CHIHUAHUA = "n02085620-Chihuahua"


def random_rgb(height: int = 40, width: int = 50) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded_image(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_bad_files(images_dir: Path) -> dict[str, tuple[str, str]]:
    """Odd files in the Chihuahua folder; returns {stem: (expected status, reason part)}."""
    folder = images_dir / CHIHUAHUA
    good = next(iter(sorted(folder.glob("*.jpg")))).read_bytes()
    rgb = random_rgb()
    files = {
        "n02085620_1": (b"", "empty", "zero-byte"),
        "n02085620_2": (good[: len(good) // 2], "truncated", "end-of-image"),
        "n02085620_3": (encoded_image(Image.fromarray(rgb), "PNG"), "converted", "PNG data (RGB)"),
        "n02085620_4": (encoded_image(Image.fromarray(rgb[..., 0]), "JPEG"), "ok", ""),
        "n02085620_5": (encoded_image(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "converted",
                        "CMYK JPEG"),
        "n02085620_6": (encoded_image(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"),
                        "converted", "PNG data (RGBA)"),
        "n02085620_7": (b"this is a text file, not a photo\n", "unreadable", "not an image"),
        "n02085620_8": (encoded_image(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"),
                        "converted", "I;16"),
        "n02085620_9": (encoded_image(Image.fromarray(rgb).convert("P"), "GIF"), "converted",
                        "GIF data (P)"),
        "n02085620_10": (good + b"\x00" * 20, "ok", ""),  # padding after the EOI marker
    }
    for stem, (data, _, _) in files.items():
        (folder / f"{stem}.jpg").write_bytes(data)
    return {stem: (status, reason) for stem, (_, status, reason) in files.items()}
