"""Multi-worker jobs on 127.0.0.1: one ``TF_CONFIG`` per worker, the workers as subprocesses."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from support.project import REPO, venv_env
from support.servers import free_ports


def tf_configs(n: int) -> list[str]:
    """``TF_CONFIG`` of each of ``n`` workers on free local ports (worker 0 is the chief)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(n)]
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(n)]


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def start_workers(cmd: list[str], cwd: Path, n: int = 2, **env: str) -> list[subprocess.Popen]:
    """``cmd`` once per worker of an ``n``-worker cluster (``env`` added to each)."""
    return [subprocess.Popen(cmd, cwd=cwd, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE,
                             env=venv_env(PYTHONPATH=f"{REPO}:{REPO / 'tests'}",
                                          TF_CONFIG=config, **env))
            for config in tf_configs(n)]


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[Finished]:
    """Wait for every process (killing all of them after ``timeout`` s in total)."""
    start = time.monotonic()
    done = []
    try:
        for proc in procs:
            remaining = max(1.0, timeout - (time.monotonic() - start))
            out, err = proc.communicate(timeout=remaining)
            done.append(Finished(proc.returncode, out, err, time.monotonic() - start))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # SIGKILL: TensorFlow's preemption notifier swallows SIGTERM
                proc.wait()
    return done


def run_workers(cmd: list[str], cwd: Path, n: int = 2, timeout: float = 300,
                **env: str) -> list[Finished]:
    """Run ``cmd`` as an ``n``-worker job and wait for all of it."""
    return wait_all(start_workers(cmd, cwd, n, **env), timeout)
