"""What every benchmark shares: the machine's description, timing, inputs, result files.

Benchmarks measure; they never assert. Each writes ``benchmarks/results/<name>.json`` with the
machine, the load average before and after (numbers on a busy 2-core machine are noisy: a
ratio measured in the same run is the number to trust) and its own measurements.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dogbreeds.jsonfile import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
# Generated inputs (extracted sample, synthetic JPEGs) are kept here and reused across runs.
SCRATCH = Path(os.environ.get("DOGBREEDS_BENCH_DIR", "/tmp/dogbreeds-bench"))
SAMPLE_TAR = Path(os.environ.get(
    "DOGBREEDS_SAMPLE_TAR", ROOT.parent / "shared/data/stanford-dogs-sample/images.tar"))
MOBILENET_WEIGHTS = Path(os.environ.get(
    "DOGBREEDS_MOBILENET_WEIGHTS",
    ROOT.parent / "shared/weights/mobilenetv2_1.00_160_notop.weights.h5"))


def machine() -> dict:
    """CPU model, cores, RAM and library versions: where the numbers come from."""
    cpu = "unknown"
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    ram_gib = None
    try:
        match = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gib = round(int(match.group(1)) / 2 ** 20, 1) if match else None
    except OSError:
        pass
    versions = {}
    for module in ("tensorflow", "keras", "numpy", "cv2", "mlflow", "dvc"):
        mod = sys.modules.get(module)
        if mod is not None:
            versions[module] = getattr(mod, "__version__", "?")
    return {"cpu": cpu, "nproc": os.cpu_count(), "ram_gib": ram_gib,
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions}


def load() -> list[float]:
    """1/5/15-minute load averages (other jobs on the machine skew absolute numbers)."""
    return [round(x, 2) for x in os.getloadavg()]


@contextmanager
def timed() -> Iterator[dict]:
    """``with timed() as t: ...`` then ``t["seconds"]`` (wall clock)."""
    box: dict = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def git_commit() -> str | None:
    """This checkout's HEAD, short (7 characters); None outside git."""
    from dogbreeds.tracking.store import git_commit as head

    commit = head(ROOT)
    return commit[:7] if commit else None


def rss_mib() -> float:
    """Current resident set size (MiB) from /proc/self/statm."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2 ** 20


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (MiB): ``ru_maxrss``, a high-water mark."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def write_result(name: str, result: dict, load_before: list[float]) -> Path:
    """``benchmarks/results/<name>.json``: the result plus machine, load and commit."""
    created, host, load_after = time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine(), load()
    # After machine(): git_commit imports mlflow, which must not appear in the versions of a
    # benchmark that never used it.
    payload = {"benchmark": name, "created": created, "git_commit": git_commit(),
               "machine": host, "load_before": load_before, "load_after": load_after, **result}
    path = RESULTS_DIR / f"{name}.json"
    write_json(path, payload)
    print(f"wrote {path.relative_to(ROOT)}  (load avg before {load_before}, after {load_after})")
    return path


def sample_images(per_breed: int | None = None) -> pd.DataFrame | None:
    """The real 4-breed sample (extracted once into SCRATCH): ``path`` (absolute), ``breed``.

    Takes the first ``per_breed`` files of each breed in path order (all when None); None when
    the sample archive is absent.
    """
    if not SAMPLE_TAR.is_file():
        return None
    target = SCRATCH / "sample"
    images = target / "Images"
    if not (target / ".complete").is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SAMPLE_TAR) as tar:
            tar.extractall(target, filter="data")
        (target / ".complete").write_text("ok")
    rows = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))[:per_breed]
        breed = folder.name.split("-", 1)[1]
        rows += [{"path": str(f), "breed": breed} for f in files]
    return pd.DataFrame(rows)


def synthetic_image(class_index: int, rng: np.random.Generator, width: int, height: int
                    ) -> np.ndarray:
    """A BGR photo-sized image whose hue and stripe direction identify the class (learnable)."""
    hsv = np.zeros((height, width, 3), np.uint8)
    hsv[..., 0] = (class_index * 47) % 180
    hsv[..., 1] = 200
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = (xx if class_index % 2 == 0 else yy) // max(2, min(width, height) // 8) % 2
    hsv[..., 2] = np.where(stripes, 220, 90)
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR).astype(np.int16)
    img += rng.integers(-25, 26, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_tree(name: str, n_images: int, n_classes: int, size: tuple[int, int],
                   jitter: int = 0, seed: int = 0, annotations: bool = False) -> pd.DataFrame:
    """``n_images`` JPEGs in the Stanford layout under ``SCRATCH/<name>/Images`` (made once).

    Args:
        size: (width, height) of every image; ``jitter`` varies each side by ± that many px.
        annotations: also write a Pascal-VOC XML per image under ``Annotation/``.

    Returns:
        ``path`` (absolute), ``breed``, in file order.
    """
    root = SCRATCH / name
    images = root / "Images"
    done = root / ".complete"
    complete = done.is_file() and done.read_text().strip() == f"{n_images} {n_classes} {size}"
    rng = np.random.default_rng(seed)
    # A few noise-varied templates per class, re-encoded per file: real-size files, fast to make.
    rows = []
    templates: dict[int, list[np.ndarray]] = {}
    for i in range(n_images):
        c = i % n_classes
        wnid = f"n{90000000 + c:08d}"
        folder = images / f"{wnid}-breed_{c:03d}"
        path = folder / f"{wnid}_{i}.jpg"
        rows.append({"path": str(path), "breed": f"breed_{c:03d}"})
        if complete:
            continue
        if c not in templates:
            folder.mkdir(parents=True, exist_ok=True)
            templates[c] = []
            for _ in range(4):
                w = size[0] + int(rng.integers(-jitter, jitter + 1))
                h = size[1] + int(rng.integers(-jitter, jitter + 1))
                templates[c].append(synthetic_image(c, rng, w, h))
        image = templates[c][(i // n_classes) % 4]
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if annotations:
            write_annotation(root / "Annotation" / folder.name / path.stem, image, c)
    if not complete:
        done.write_text(f"{n_images} {n_classes} {size}")
    return pd.DataFrame(rows)


def write_annotation(path: Path, image: np.ndarray, class_index: int) -> None:
    """A Pascal-VOC XML like Stanford Dogs' (one object, a box inside the image)."""
    h, w = image.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>{path.parent.name}</folder><filename>{path.name}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        f"<object><name>breed_{class_index:03d}</name><bndbox><xmin>{w // 8}</xmin>"
        f"<ymin>{h // 8}</ymin><xmax>{w - w // 8}</xmax><ymax>{h - h // 8}</ymax></bndbox>"
        f"</object></annotation>")


def add_split(df: pd.DataFrame, val_fraction: float, seed: int = 42) -> pd.DataFrame:
    """``split`` = train/val per breed with the project's own stratified assignment."""
    from dogbreeds.data.split import stratified_assignment

    df = df.reset_index(drop=True).copy()
    df["split"] = stratified_assignment(df["path"], df["breed"], val_fraction, 0.0, seed)
    df["origin"] = "original"
    return df
