"""Scaling out: 1 vs 2 processes for the feature pass and for multi-worker training.

Everything runs the real stage commands in a throwaway project on synthetic photos:

- ``features``: ``python -m pipeline.features mobilenetv2`` (one process) vs two
  ``--shard i/2`` processes side by side, then ``--merge 2``. images/s of the backbone pass
  (the stage's own timer, the slower shard for two), and wall time of the whole job
  (process start-up, TensorFlow import and the merge included).
- ``training``: ``python -m pipeline.train_scratch`` with ``base.distribute: multi_worker``
  on 1 worker vs 2 workers on 127.0.0.1 (the same custom step, so the comparison is the
  scaling alone), plus one process with Keras ``fit`` (``distribute: none``) for reference.
  Per-replica batch fixed, so 2 workers take half the steps of a twice larger global batch:
  images/s is the comparable rate; steps/s is reported too.

Efficiency = rate with 2 processes / (2 × rate with 1). This machine has 2 cores, shared
with other jobs: 2 processes cannot gain more than 2×, and TensorFlow already uses both
cores in one process, so expect little or no gain here; the numbers show the overhead that
N machines pay, not their speed-up.

    python -m benchmarks.scaling [--images 240] [--image-size 96] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.common import ROOT, load, ratio, synthetic_tree, write_result

NAME = "scaling"
BACKBONE = "mobilenetv2"


def free_ports(n: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_configs(n: int) -> list[str]:
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


def make_project(path: Path, n_images: int, image_size: int, epochs: int, distribute: str
                 ) -> Path:
    df = synthetic_tree("scaling", n_images, 4, (320, 240))
    df["split"] = ["val" if i % 5 == 0 else "train" for i in range(len(df))]
    df["origin"] = "original"
    (path / "data" / "augmented").mkdir(parents=True, exist_ok=True)
    df.to_parquet(path / "data" / "augmented" / "dataset.parquet")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"].update(distribute=distribute, join_timeout_seconds=300)
    params["train_transfer"].update(weights="none", image_size={BACKBONE: 160}, batch_size=32)
    params["train_scratch"].update(image_size=image_size, epochs=epochs, batch_size=16,
                                   early_stopping_patience=epochs, use_augmented=False)
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    return path


def run(project: Path, commands: list[list[str]], configs: list[str | None] | None = None
        ) -> float:
    """``python -m <command>`` side by side, each with its TF_CONFIG (None: none); the wall
    seconds until the last one ends."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    configs = configs or [None] * len(commands)
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", *argv], cwd=project, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**env, **({"TF_CONFIG": c} if c else {})})
             for argv, c in zip(commands, configs, strict=True)]
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode:
            raise RuntimeError(f"{proc.args} failed:\n{err[-3000:]}")
    return time.perf_counter() - start


def features(tmp: Path, args) -> dict:
    one = make_project(tmp / "features-1", args.images, args.image_size, args.epochs, "none")
    two = make_project(tmp / "features-2", args.images, args.image_size, args.epochs, "none")
    wall_one = run(one, [["pipeline.features", BACKBONE]])
    wall_shards = run(two, [["pipeline.features", BACKBONE, "--shard", f"{i}/2"]
                            for i in range(2)])
    wall_merge = run(two, [["pipeline.features", BACKBONE, "--merge", "2"]])
    meta_one = json.loads((one / "data/features" / BACKBONE / "meta.json").read_text())
    meta_two = json.loads((two / "data/features" / BACKBONE / "meta.json").read_text())
    rate_one, rate_two = meta_one["images_per_second"], meta_two["images_per_second"]
    wall_two = wall_shards + wall_merge
    return {"images": meta_one["n"],
            "one_process": {"images_per_second": rate_one, "wall_seconds": round(wall_one, 1)},
            "two_shards": {"images_per_second": rate_two, "wall_seconds": round(wall_two, 1),
                           "merge_wall_seconds": round(wall_merge, 1)},
            "speedup_pass": ratio(rate_two, rate_one),
            "efficiency_pass": ratio(rate_two, 2 * rate_one),
            "speedup_wall": ratio(wall_one, wall_two)}


def training(tmp: Path, args) -> dict:
    out = {}
    for label, distribute, workers in (("fit_one_process", "none", 0),
                                       ("one_worker", "multi_worker", 1),
                                       ("two_workers", "multi_worker", 2)):
        project = make_project(tmp / f"train-{label}", args.images, args.image_size,
                               args.epochs, distribute)
        configs = tf_configs(workers) if workers else [None]
        wall = run(project, [["pipeline.train_scratch"]] * len(configs), configs)
        metrics = json.loads((project / "models/scratch/metrics.json").read_text())
        n_train = len(pd.read_parquet(project / "data/augmented/dataset.parquet")
                      .query("split == 'train'"))
        global_batch = 16 * max(1, workers)
        steps = math.ceil(n_train / global_batch) * metrics["epochs"]
        out[label] = {"images_per_second": metrics["images_per_second"],
                      "steps_per_second": round(steps / metrics["train_seconds"], 3),
                      "global_batch": global_batch, "train_seconds": metrics["train_seconds"],
                      "val_accuracy": metrics["val_accuracy"], "wall_seconds": round(wall, 1)}
    out["efficiency_images"] = ratio(out["two_workers"]["images_per_second"],
                                     2 * out["one_worker"]["images_per_second"])
    out["speedup_images"] = ratio(out["two_workers"]["images_per_second"],
                                  out["one_worker"]["images_per_second"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-features", action="store_true")
    args = parser.parse_args(argv)
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="dogbreeds-scaling-") as tmp:
        result = {"cpus": os.cpu_count(), "args": vars(args)}
        if not args.skip_features:
            result["features"] = features(Path(tmp), args)
            print("features:", json.dumps(result["features"]))
        result["training"] = training(Path(tmp), args)
        print("training:", json.dumps(result["training"]))
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
