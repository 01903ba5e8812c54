"""A throwaway pipeline project on real photos for ``benchmarks.accuracy``.

The benchmark measures the pipeline's own stages, so it runs them (``python -m pipeline.<stage>``,
the commands of ``dvc.yaml``) in a project folder under ``$DOGBREEDS_BENCH_DIR`` whose
``params.yaml`` is this checkout's with the data pointed at a real set in ``../shared``: the
25-breed dev set (``dev``) or the 4-breed sample (``sample``, its profile). A stage whose
params (and the stages before it) are unchanged since it last ran there is not rerun.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.common import MOBILENET_WEIGHTS, ROOT, SCRATCH
from dogbreeds.hashing import canonical_json, digest
from dogbreeds.profiles import merge

SHARED = Path(os.environ.get("DOGBREEDS_SHARED", ROOT.parent / "shared"))
BACKBONE = "mobilenetv2"
# What each data set changes in params.yaml (the sample: its profile plus the same keys).
DATA = {
    "dev": {"dir": SHARED / "data/stanford-dogs-dev", "profile": None,
            "params": {"download": {"mirrors": [], "archives": ["images.tar"], "checksums": {
                "images.tar": "44b640c13c1d1e960fac232461648dd801b8670f97cccbbffcfa499b98d744d0"}},
                       "data": {"breeds": "all"}}},
    "sample": {"dir": SHARED / "data/stanford-dogs-sample",
               "profile": ROOT / "profiles/sample.yaml", "params": {}},
}
# Stages in order, with the params sections each reads (dvc.yaml's params, coarser).
STAGES = [("download", ["download"]), ("build_metadata", ["data", "build_metadata"]),
          ("split", ["split"]), ("augment", ["augment"]),
          ("features", ["base", "train_transfer"])]


def project_params(data: str) -> dict:
    """This checkout's params.yaml with ``data``'s overrides, MobileNetV2-160 offline."""
    spec = DATA[data]
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    if spec["profile"] is not None:
        merge(params, yaml.safe_load(spec["profile"].read_text(encoding="utf-8")))
    merge(params, copy.deepcopy(spec["params"]))
    merge(params, {"download": {"base_url": spec["dir"].resolve().as_uri() + "/"},
                   "train_transfer": {"backbones": [BACKBONE], "image_size": {BACKBONE: 160},
                                      "weights": str(MOBILENET_WEIGHTS.resolve())}})
    return params


def project_dir(data: str) -> Path:
    return SCRATCH / f"accuracy-{data}"


def write_project(data: str, params: dict) -> Path:
    """The project folder with ``params`` as its params.yaml (other files untouched)."""
    root = project_dir(data)
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return root


def stage_env() -> dict[str, str]:
    """The stages import ``pipeline`` from this checkout and log to the project's own MLflow."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_stage(root: Path, stage: str, *args: str) -> float:
    """``python -m pipeline.<stage> [args]`` in ``root``; its wall seconds.

    Raises:
        RuntimeError: when the stage fails (with the end of its output).
    """
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"pipeline.{stage}", *args], cwd=root,
                          env=stage_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"pipeline.{stage} failed in {root} (exit {proc.returncode}):\n{tail}")
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or [""]
    print(f"  {stage} {' '.join(args)}: {seconds:.1f} s  {last[0]}", flush=True)
    return seconds


def prepare_data(data: str, params: dict, fresh: bool = False) -> tuple[Path, dict]:
    """Run download → build_metadata → split → augment → features@mobilenetv2 in the project
    (each only when its params, or an earlier stage, changed); returns (root, seconds by stage)."""
    root = write_project(data, params)
    stamps_file = root / "stages.json"
    stamps = {} if fresh or not stamps_file.is_file() else json.loads(stamps_file.read_text())
    seconds: dict[str, float] = {}
    key = ""
    for stage, sections in STAGES:
        key = digest([key, canonical_json({s: params.get(s) for s in sections})], 16)
        if stamps.get(stage) == key:
            continue
        stamps.pop(stage, None)
        if stage == "download" and (root / "data").exists():
            shutil.rmtree(root / "data")
        seconds[stage] = run_stage(root, stage, *([BACKBONE] if stage == "features" else []))
        stamps[stage] = key
        stamps_file.write_text(json.dumps(stamps, indent=1))
    return root, seconds
