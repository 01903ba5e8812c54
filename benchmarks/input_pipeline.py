"""Input pipeline: images/s of decode + resize + a random horizontal flip, batched.

Same files, same output (float32 ``[32, S, S, 3]`` batches in 0–255 RGB), one process:

- ``project``: :func:`dogbreeds.data.datasets.make_dataset` (tf.data: parallel map of the shared
  :func:`dogbreeds.data.preprocess.load_image`, plain bilinear resize, prefetch) + flip;
- ``image_dataset_from_directory``: ``keras.utils.image_dataset_from_directory`` (bilinear,
  no antialiasing either) + the same flip;
- ``opencv_loop``: a plain Python loop of ``cv2.imread`` → RGB → ``cv2.resize`` → flip;
- ``opencv_threads``: the same per-image work in a thread pool (one thread per core);
- ``project_with_antialias`` (diagnostic): the project's tf.data path with an antialiased
  bilinear resize instead, to measure what antialiasing (which
  :func:`dogbreeds.data.preprocess.resize` leaves out) would cost.

Then, on its own, ``small_files``: ``make_dataset`` alone (no flip, not shuffled) over 24
tiny 40×40 JPEGs listed 10 times, resized to 128 px, batch 32: the per-image overhead of the
pipeline when decoding costs almost nothing (it was a print-only test before).

Each path runs one untimed warm-up epoch (tracing, page cache), then ``--repeats`` timed
rounds with the paths interleaved (so load from other jobs hits them alike); the median
epoch gives images/s. Ratios are the project's images/s over each
alternative's (target: ≥ 1× image_dataset_from_directory).

    python -m benchmarks.input_pipeline [--per-breed 125] [--image-size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import SCRATCH, load, ratio, sample_images, synthetic_tree, write_result

NAME = "input_pipeline"


def link_tree(df, name: str) -> Path:
    """A class-per-folder tree of symlinks to exactly ``df``'s files (for the Keras loader)."""
    root = SCRATCH / name
    for path, breed in zip(df["path"], df["breed"], strict=True):
        link = root / breed / Path(path).name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return root


def measure(runs: dict, n_images: int, repeats: int) -> dict:
    """Warm every path up once, then time ``repeats`` rounds, the paths interleaved in each
    round so that load from other jobs hits them alike; images/s from the median epoch."""
    for run in runs.values():
        run()  # warm-up: graph tracing, file cache
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            seen = run()
            times[label].append(time.perf_counter() - start)
            if seen != n_images:
                raise RuntimeError(f"{label}: epoch saw {seen} images, expected {n_images}")
    return {label: {"epoch_seconds": [round(t, 3) for t in ts],
                    "images_per_second": round(n_images / statistics.median(ts), 1)}
            for label, ts in times.items()}


def small_files(repeats: int) -> dict:
    """``make_dataset`` images/s over tiny files: 24 JPEGs of 40 px listed 10 times → 128 px."""
    import pandas as pd

    from dogbreeds.data.datasets import class_names, make_dataset

    files = synthetic_tree("input-small", 24, 3, (40, 40))
    df = pd.concat([files] * 10, ignore_index=True)
    ds = make_dataset(df, class_names(df), 128, 32)
    results = measure({"small_files": lambda: sum(len(labels) for _, labels in ds)}, len(df),
                      repeats)["small_files"]
    print(f"  small_files (make_dataset, {len(df)} 40-px JPEGs -> 128 px) "
          f"{results['images_per_second']:8.1f} images/s (epochs {results['epoch_seconds']} s)")
    return {"n_images": len(df), "source_size": 40, "image_size": 128, "batch_size": 32,
            **results}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-breed", type=int, default=125)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    load_before = load()

    import cv2
    import keras
    import tensorflow as tf

    from dogbreeds.data.datasets import class_names, labels_for, make_dataset
    from dogbreeds.data.preprocess import decode_image

    df = sample_images(args.per_breed)
    source = "stanford-dogs-sample (real photos)"
    if df is None:
        df = synthetic_tree("input", 4 * args.per_breed, 4, (500, 375), jitter=60)
        source = "synthetic 500x375 JPEGs (sample archive absent)"
    n, size, batch = len(df), args.image_size, args.batch_size
    classes = class_names(df)
    tree = link_tree(df, f"input-links-{n}")
    print(f"{NAME}: {n} images ({source}) → {size}x{size}, batch {batch}, flip; "
          f"median of {args.repeats} epochs after a warm-up")

    def flip(images, labels):
        return tf.image.random_flip_left_right(images, seed=0), labels

    def count(ds) -> int:
        return sum(int(images.shape[0]) for images, _ in ds)

    project_ds = make_dataset(df, classes, size, batch, shuffle=True, seed=0).map(
        flip, num_parallel_calls=tf.data.AUTOTUNE)
    # Diagnostic, not an alternative: the project's path with an antialiased resize, to measure
    # what antialiasing would cost (the project leaves it out, for training and inference alike).
    def load_antialiased(path, label):
        image = decode_image(tf.io.read_file(path))
        return tf.image.resize(image, (size, size), method="bilinear", antialias=True), label

    antialias_ds = tf.data.Dataset.from_tensor_slices(
        (list(df["path"]), labels_for(df, classes))).shuffle(n, seed=0).map(
        load_antialiased, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(
        batch).map(flip, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    keras_ds = keras.utils.image_dataset_from_directory(
        tree, image_size=(size, size), batch_size=batch, shuffle=True, seed=0,
        verbose=False).map(flip, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    paths = list(df["path"])
    rng = np.random.default_rng(0)

    def cv2_image(path: str) -> np.ndarray:
        image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return image.astype(np.float32)

    def cv2_loop() -> int:
        seen = 0
        for start in range(0, n, batch):
            seen += len(np.stack([cv2_image(p) for p in paths[start:start + batch]]))
        return seen

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)

    def cv2_threads() -> int:
        seen = 0
        for start in range(0, n, batch):
            seen += len(np.stack(list(pool.map(cv2_image, paths[start:start + batch]))))
        return seen

    runs = {
        "project": lambda: count(project_ds),
        "project_with_antialias": lambda: count(antialias_ds),
        "image_dataset_from_directory": lambda: count(keras_ds),
        "opencv_loop": cv2_loop,
        "opencv_threads": cv2_threads,
    }
    results = measure(runs, n, args.repeats)
    for label in runs:
        print(f"  {label:30s} {results[label]['images_per_second']:8.1f} images/s "
              f"(epochs {results[label]['epoch_seconds']} s)")
    pool.shutdown()
    project = results["project"]["images_per_second"]
    ratios = {f"project_over_{k}": ratio(project, v["images_per_second"])
              for k, v in results.items() if k != "project"}
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    small = small_files(args.repeats)
    return_value = {
        "inputs": {"source": source, "n_images": n, "image_size": size, "batch_size": batch,
                   "repeats": args.repeats, "augmentation": "random horizontal flip"},
        "images_per_second": {k: v["images_per_second"] for k, v in results.items()},
        "epoch_seconds": {k: v["epoch_seconds"] for k, v in results.items()},
        "ratios": ratios,
        "small_files": small,
        "target_project_over_image_dataset_from_directory_min": 1.0,
        "notes": "project resize is plain bilinear (same as inference), as is Keras' loader; "
                 "project_with_antialias is the project's path with antialias=True; OpenCV "
                 "uses INTER_LINEAR.",
    }
    write_result(NAME, return_value, load_before)
    return return_value


if __name__ == "__main__":
    main()
