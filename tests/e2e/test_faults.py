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


# ------------------------------------------------------------------ web demo killed mid-traffic


def start_demo(root: Path, tracking_uri: str, port: int) -> subprocess.Popen:
    """`dogbreeds serve` (the real command) in ``root``, keeping its log and feedback there."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dogbreeds")), "serve", "--port", str(port),
         "--prediction-log", "logs/predictions.sqlite", "--feedback-dir", "feedback",
         "--max-wait-ms", "2"],
        cwd=root, env=venv_env(MLFLOW_TRACKING_URI=tracking_uri), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_demo(url: str, proc: subprocess.Popen) -> None:
    import requests

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("dogbreeds serve stopped:\n" + proc.stdout.read()[-3000:])
        try:
            return requests.get(url + "/api/health", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, 180, "dogbreeds serve to answer", poll=0.25)


def traffic(url: str, worker: int, stop, answered: list, judged: dict) -> None:
    """Predict new photos and judge each (twice: correct, then a relabel) until ``stop``;
    record what the server acknowledged."""
    import requests

    from dogbreeds import hashing
    from support import tiny_models as tm

    labels = ["mixed", "not_a_dog", "Chihuahua"]
    for i in range(10_000):
        if stop.is_set():
            return
        photo = tm.breed_jpeg("papillon", seed=worker * 100_000 + i, size=96)
        try:
            body = requests.post(url + "/api/predict", files={"file": ("d.jpg", photo)},
                                 timeout=30).json()
            answered.append(body["answer_id"])
            for verdict, label in (("correct", None), ("wrong", labels[i % 3])):
                reply = requests.post(url + "/api/feedback", files={"file": ("d.jpg", photo)},
                                      data={"answer_id": body["answer_id"], "verdict": verdict,
                                            "label": label or ""}, timeout=30)
                reply.raise_for_status()
                judged[hashing.digest(photo)] = reply.json()["label"]
        except (requests.ConnectionError, requests.Timeout):
            return  # the server is gone


def test_demo_killed_mid_traffic_loses_no_acknowledged_answer_or_judgement(tiny_registry,
                                                                          tmp_path):
    """SIGKILL `dogbreeds serve` while 6 clients predict and judge: the log passes
    PRAGMA integrity_check and holds every answer a client received; the feedback folder holds
    no partial photo, every acknowledged judgement (the last per photo wins), and a restarted
    server settles it and goes on appending to the same log."""
    import sqlite3
    import threading

    import requests

    from dogbreeds import hashing
    from dogbreeds.data import feedback
    from dogbreeds.serving import predlog
    from support.servers import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_demo(tmp_path, tiny_registry.tracking_uri, port)
    answered: list[str] = []
    judged: dict[str, str] = {}
    stop = threading.Event()
    try:
        wait_for_demo(url, proc)
        clients = [threading.Thread(target=traffic, args=(url, n, stop, answered, judged))
                   for n in range(6)]
        for client in clients:
            client.start()
        wait_for(lambda: len(judged) >= 30, 180, "30 judged photos")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # mid-traffic: no shutdown handler runs
        proc.communicate(timeout=30)
        stop.set()
    for client in clients:
        client.join(timeout=60)

    log_file = tmp_path / "logs" / "predictions.sqlite"
    with sqlite3.connect(log_file) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    logged = predlog.read_predictions(log_file)
    assert set(answered) <= set(logged["answer_id"])  # every answer received was logged
    assert (logged["model_version"] == "1").all() and logged["image_sha256"].str.len().eq(64).all()

    folder = tmp_path / "feedback"
    for label in folder.iterdir():  # before any repair: whole photos only
        if not label.name.startswith("."):
            for photo in label.iterdir():
                assert photo.name.startswith(hashing.file_sha256(photo)), f"half {photo}"
    records = {r["image_sha256"]: r for r in feedback.read_records(folder)}
    for sha, label in judged.items():  # acknowledged => recorded (a later one may follow)
        record = records[sha]
        assert label in [h["label"] for h in record["history"]] + [record["label"]]

    proc = start_demo(tmp_path, tiny_registry.tracking_uri, port)
    try:
        wait_for_demo(url, proc)  # start-up settles the folder
        for record in feedback.read_records(folder):
            copies = [p.parent.name for p in folder.glob(f"*/{record['image_sha256']}.*")
                      if not p.parent.name.startswith(".")]
            assert copies == [record["label"]]
        photo = tiny_registry.photos["papillon"][0].read_bytes()
        body = requests.post(url + "/api/predict", files={"file": ("d.jpg", photo)},
                             timeout=60).json()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
    assert body["answer_id"] in set(predlog.read_predictions(log_file)["answer_id"])
    assert len(predlog.read_predictions(log_file)) == len(logged) + 1
