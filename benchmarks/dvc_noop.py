"""``dvc repro`` with nothing changed: wall time of the no-op (and of ``dvc status``).

Needs a project where the whole pipeline already ran (``--project``, default this checkout):
it must have a ``dvc.lock`` and ``dvc status`` must report it up to date, otherwise the
benchmark is skipped with a message (a "no-op" repro that reruns stages would train models
for minutes). The project is copied (without its ``.venv``) so this never touches
it; the first ``dvc status`` in the copy rehashes every file (new inodes: DVC's state cache is
cold) and is reported separately; then ``--repeats`` warm runs of each command.

    python -m benchmarks.dvc_noop [--project PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, SCRATCH, load, write_result

NAME = "dvc_noop"
UP_TO_DATE = "up to date"  # `dvc status`: "Data and pipelines are up to date."


def dvc_binary() -> str:
    local = Path(sys.executable).with_name("dvc")
    return str(local) if local.is_file() else (shutil.which("dvc") or "dvc")


def timed_dvc(args: list[str], cwd: Path) -> tuple[float, str, int]:
    start = time.perf_counter()
    proc = subprocess.run([dvc_binary(), *args], cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, (proc.stdout + proc.stderr).strip(), proc.returncode


def skip(reason: str, load_before: list[float]) -> dict:
    print(f"{NAME}: skipped — {reason}")
    result = {"skipped": reason}
    write_result(NAME, result, load_before)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = load()
    source = args.project.resolve()
    if not (source / "dvc.lock").is_file():
        return skip(f"{source} has no dvc.lock (run the pipeline there first)", load_before)
    try:
        running = json.loads((source / ".dvc" / "tmp" / "rwlock").read_text() or "{}")
    except (OSError, ValueError):
        running = {}
    if any(running.values()):
        return skip(f"a dvc command is running in {source} (its rwlock is held)", load_before)

    copy = SCRATCH / "dvc-noop-project"
    if copy.exists():
        shutil.rmtree(copy)
    start = time.perf_counter()
    shutil.copytree(source, copy, symlinks=True,
                    # DVC's lock files belong to the source's processes; a copy starts unlocked.
                    ignore=shutil.ignore_patterns(".venv", "mlruns", "mlflow.db", "checkpoints",
                                                  "rwlock*", "lock"))
    copy_seconds = time.perf_counter() - start

    cold, out, code = timed_dvc(["status"], copy)
    if code != 0 or UP_TO_DATE not in out:
        return skip(f"`dvc status` in a copy of {source} is not clean (exit {code}): "
                    f"{out[:500]}", load_before)
    status_times, repro_times = [], []
    for _ in range(args.repeats):
        seconds, out, code = timed_dvc(["status"], copy)
        status_times.append(seconds)
        seconds, out, code = timed_dvc(["repro"], copy)
        if code != 0 or "Running stage" in out:
            return skip(f"`dvc repro` was not a no-op (exit {code}): {out[:500]}", load_before)
        repro_times.append(seconds)
    lock_lines = (copy / "dvc.lock").read_text().splitlines()
    stages = sum(1 for line in lock_lines
                 if line.startswith("  ") and not line.startswith("   ")
                 and line.rstrip().endswith(":"))
    result = {
        # A name: machine paths do not belong in the committed result.
        "project": source.name, "copy_seconds": round(copy_seconds, 2), "stages": stages,
        "dvc_status_cold_seconds": round(cold, 2),
        "dvc_status_seconds": [round(t, 2) for t in status_times],
        "dvc_repro_noop_seconds": [round(t, 2) for t in repro_times],
        "dvc_status_median_seconds": round(statistics.median(status_times), 2),
        "dvc_repro_noop_median_seconds": round(statistics.median(repro_times), 2),
        "target_seconds_max": 3.0,
    }
    print(f"{NAME}: {stages} stages; dvc status cold {cold:.2f} s (fresh copy, state rehash), "
          f"warm median {result['dvc_status_median_seconds']:.2f} s; no-op dvc repro median "
          f"{result['dvc_repro_noop_median_seconds']:.2f} s (target <= 3 s)")
    shutil.rmtree(copy, ignore_errors=True)
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
