"""Run every benchmark (each in its own process), then draw ``docs/benchmarks.png``.

    python -m benchmarks.run_all [--only transfer_cache input_pipeline] [--skip dvc_noop]

Order: the cheap ones first; each writes ``benchmarks/results/<name>.json``. A failing
benchmark is reported and the others still run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from benchmarks.common import ROOT, load

BENCHMARKS = ["transfer_cache", "transfer_stage", "input_pipeline", "feature_extraction",
              "metadata", "train_memory", "dvc_noop", "inference", "serving", "predlog",
              "accuracy"]
# Runs that are one benchmark module with other arguments: the stage vs its one-pass floor at
# the default 15-breed size and at the full dataset's size: 20,580 photos of 120 breeds
# (synthetic).
RUNS = {"transfer_stage": [
    ["transfer_cache", "--synthetic", "3000", "--skip-recompute", "--repeats", "1",
     "--name", "transfer_stage_3000"],
    ["transfer_cache", "--synthetic", "20580", "--breeds", "120", "--skip-recompute",
     "--repeats", "1", "--name", "transfer_stage_20580"]],
    # The probe and heads on the dev set (~4 min); the scratch rows take over an hour:
    # `python -m benchmarks.accuracy --data dev` on its own.
    "accuracy": [["accuracy", "--data", "dev", "--only", "transfer",
                  "--name", "accuracy_dev_transfer"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS)
    parser.add_argument("--skip", nargs="+", choices=BENCHMARKS, default=[])
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHMARKS:
        if name in args.skip:
            continue
        for module, *options in RUNS.get(name, [[name]]):
            label = " ".join([module, *options])
            print(f"=== {label} (load avg {load()})", flush=True)
            start = time.perf_counter()
            code = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *options],
                                  cwd=ROOT).returncode
            print(f"=== {label}: exit {code} after {time.perf_counter() - start:.0f} s",
                  flush=True)
            if code:
                failed.append(label)
    subprocess.run([sys.executable, "-m", "benchmarks.plot"], cwd=ROOT)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
