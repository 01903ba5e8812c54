"""Faults real runs meet, each asserting nothing was lost: two ``dvc repro`` at once, and a
download killed mid-file.

(A training process killed mid-epoch: tests/stages/test_train_scratch.py; an unreachable tracking
server: tests/test_tracking.py and tests/test_tracking_server.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dogbreeds.profiles import apply_profile
from support import fakedata
from support.project import GIT_ENV, dvc_bin, make_project, run_stage, venv_env
from support.servers import DirectoryServer

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout} s")
        time.sleep(poll)


# ------------------------------------------------------------------ two `dvc repro` at once

SLOW_STAGE = textwrap.dedent("""\
    stages:
      slow:
        cmd: python slow.py
        deps: [slow.py]
        outs: [out.txt]
    """)
SLOW_SCRIPT = textwrap.dedent("""\
    import pathlib, time
    pathlib.Path("started").write_text("yes")
    time.sleep(8)
    pathlib.Path("out.txt").write_text("complete\\n")
    """)


def git_dvc_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "dvc.yaml").write_text(SLOW_STAGE)
    (path / "slow.py").write_text(SLOW_SCRIPT)
    (path / ".gitignore").write_text("started\n")
    env = venv_env(**GIT_ENV)
    for cmd in (["git", "init", "-q"], [dvc_bin(), "init", "-q"],
                [dvc_bin(), "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "slow stage"]):
        subprocess.run(cmd, cwd=path, check=True, env=env, capture_output=True)
    return path


def test_second_concurrent_repro_fails_fast_and_the_first_completes(tmp_path):
    project = git_dvc_repo(tmp_path / "proj")
    first = subprocess.Popen([dvc_bin(), "repro"], cwd=project, env=venv_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for((project / "started").exists, 60, "the first repro's stage to start")
        start = time.monotonic()
        second = subprocess.run([dvc_bin(), "repro"], cwd=project, env=venv_env(),
                                capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - start
        first_out, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    output = second.stdout + second.stderr
    assert second.returncode != 0
    # DVC frees its repo lock while a stage command runs and guards the stage's outputs
    # with its rwlock (.dvc/tmp/rwlock): that is the message, naming the first PID.
    assert ("is busy, it is being blocked by" in output and f"(PID {first.pid})" in output
            and "rwlock" in output) or "Unable to acquire lock" in output, output
    assert elapsed < 8, f"the second repro waited {elapsed:.1f} s instead of failing fast"
    assert first.returncode == 0, first_out
    assert first_out.count("Running stage 'slow'") == 1

    # Nothing is corrupted: the output is whole, the lock file records it, a rerun is a no-op.
    assert (project / "out.txt").read_text() == "complete\n"
    status = subprocess.run([dvc_bin(), "status"], cwd=project, env=venv_env(),
                            capture_output=True, text=True, timeout=60)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    assert "out.txt" in (project / "dvc.lock").read_text()


# ------------------------------------------------------------------ download killed mid-file


@pytest.fixture(scope="module")
def big_archives(tmp_path_factory) -> fakedata.FakeDataset:
    """Fake archives whose images.tar is a few MB (noisy 256 px photos): long enough to kill
    the download in the middle, on a throttled server."""
    return fakedata.make_archives(tmp_path_factory.mktemp("big"), per_breed=30, size=256)


def download_stage(project: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.download"], cwd=project,
                            env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def test_download_killed_mid_file_resumes_from_the_part(big_archives, tmp_path):
    archives = big_archives.archives
    size = (archives / "images.tar").stat().st_size
    assert size > 1_000_000
    checksums = big_archives.checksums()
    project = make_project(tmp_path / "proj")
    cache = project / "data" / "downloads"
    part = cache / "images.tar.part"

    # ~1.3 MB/s: the download takes seconds, so it is killed mid-file.
    with DirectoryServer(archives, throttle=0.05) as slow:
        apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml", [
            f"download.base_url={slow.url}", "download.verify=true",
            f"download.checksums={json.dumps(checksums)}"])
        proc = download_stage(project)
        try:
            wait_for(lambda: part.exists() and part.stat().st_size >= 300_000, 120,
                     "part of images.tar to arrive")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # no cleanup handlers run: like a power cut
            proc.communicate(timeout=30)
    kept = part.stat().st_size
    assert 0 < kept < size
    assert not (cache / "images.tar").exists()
    assert not (project / "data" / "raw" / "Images").exists()  # nothing half-extracted

    with DirectoryServer(archives) as fast:
        apply_profile(project / "params.yaml", None, [f"download.base_url={fast.url}"])
        done = run_stage(project, "download")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        image_requests = [r for r in fast.requests
                          if r.method == "GET" and r.path == "/images.tar"]
    assert [r.range for r in image_requests] == [f"bytes={kept}-"]
    assert fakedata.sha256(cache / "images.tar") == checksums["images.tar"]
    assert not part.exists()
    images = list((project / "data" / "raw" / "Images").rglob("*.jpg"))
    assert len(images) == big_archives.n_images
