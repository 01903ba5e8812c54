"""Memory: peak RSS of one scratch-CNN training epoch as the dataset grows (500 → 20,000).

The training input streams from disk (:func:`dogbreeds.data.datasets.make_dataset` shuffles path
strings, decodes batch by batch), so peak memory should stay flat as the number of images
grows. Each size runs in a fresh subprocess (``ru_maxrss`` is a per-process high-water mark):
it builds a small :func:`dogbreeds.models.builders.build_scratch_cnn` at 64 px and trains it
one epoch with ``model.fit``; the child reports its RSS before ``fit`` and its peak.

Inputs: 2,000 distinct small synthetic JPEGs (128×96, 10 classes) listed repeatedly to reach
each size (decoding cost and memory per image are what matter, not distinctness).

    python -m benchmarks.train_memory [--sizes 500 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import ROOT, load, peak_rss_mib, ratio, rss_mib, synthetic_tree, write_result

NAME = "train_memory"
DISTINCT = 2000
CLASSES = 10


def child(n_images: int, image_size: int, batch_size: int) -> dict:
    """Train one epoch on ``n_images`` rows; return RSS numbers (MiB) and timing."""
    import keras

    from dogbreeds.data.datasets import class_names, make_dataset
    from dogbreeds.models.builders import build_scratch_cnn

    files = synthetic_tree("train-memory", DISTINCT, CLASSES, (128, 96))
    df = files.iloc[[i % len(files) for i in range(n_images)]].reset_index(drop=True)
    classes = class_names(df)
    keras.utils.set_random_seed(0)
    model = build_scratch_cnn(len(classes), image_size,
                              blocks=[{"filters": 16, "kernel": 3}, {"filters": 32, "kernel": 3},
                                      {"filters": 64, "kernel": 3}],
                              dense=[64], dropout=0.2, learning_rate=1e-3,
                              augmentation={"flip": True}, seed=0)
    ds = make_dataset(df, classes, image_size, batch_size, shuffle=True, seed=0)
    rss_before = rss_mib()
    start = time.perf_counter()
    history = model.fit(ds, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return {"n_images": n_images, "rss_before_fit_mib": round(rss_before, 1),
            "peak_rss_mib": round(peak_rss_mib(), 1),
            "fit_seconds": round(seconds, 2),
            "images_per_second": round(n_images / seconds, 1),
            "loss": float(history.history["loss"][-1])}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000, 20000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.image_size, args.batch_size)))
        return {}
    load_before = load()
    synthetic_tree("train-memory", DISTINCT, CLASSES, (128, 96))  # generate once, untimed
    print(f"{NAME}: scratch CNN at {args.image_size}px, batch {args.batch_size}, 1 epoch per "
          f"size, fresh process each")
    runs = []
    for n in args.sizes:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_memory", "--child", str(n),
             "--image-size", str(args.image_size), "--batch-size", str(args.batch_size)],
            cwd=ROOT, capture_output=True, text=True, check=False)
        line = next((out for out in proc.stdout.splitlines() if out.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"child for {n} images failed:\n{proc.stderr[-3000:]}")
        run = json.loads(line[len("RESULT "):])
        # For scale: the same images held in memory as one float32 array (what a loader that
        # reads the whole dataset first would need on top of the process).
        run["all_images_float32_mib"] = round(n * args.image_size ** 2 * 3 * 4 / 2 ** 20, 1)
        runs.append(run)
        print(f"  {n:6d} images: peak RSS {run['peak_rss_mib']:.0f} MiB (before fit "
              f"{run['rss_before_fit_mib']:.0f} MiB; all images as one float32 array would be "
              f"{run['all_images_float32_mib']:.0f} MiB), epoch {run['fit_seconds']:.1f} s "
              f"({run['images_per_second']:.0f} images/s)")
    growth = ratio(runs[-1]["peak_rss_mib"], runs[0]["peak_rss_mib"])
    print(f"  peak RSS {runs[-1]['n_images']} / {runs[0]['n_images']} images: {growth:.3f}x "
          f"(target <= 1.3x)")
    result = {"inputs": {"distinct_files": DISTINCT, "file_size": "128x96", "classes": CLASSES,
                         "image_size": args.image_size, "batch_size": args.batch_size,
                         "model": "scratch CNN 16-32-64, dense 64"},
              "runs": runs, "ratio_peak_rss_largest_over_smallest": growth,
              "target_ratio_max": 1.3}
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
