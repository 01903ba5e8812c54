"""DVC remote storage: push from one clone, pull into a fresh clone, and nothing re-runs.

The project's first two real stages (``download`` → ``build_metadata``) run on the fake
archives (``file://``), then the outputs go to a local remote — the same commands as an
S3 or SSH remote, minus the credentials.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from dogbreeds.profiles import apply_profile
from support.project import GIT_ENV, dvc_bin, make_project, relative_files, venv_env

pytestmark = pytest.mark.slow


def run(cwd: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), cwd=cwd, env=venv_env(**GIT_ENV), text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return run(cwd, dvc_bin(), *args)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, fake_archives):
    """A project that reproduced ``build_metadata``, pushed its outputs and committed."""
    base = tmp_path_factory.mktemp("remote")
    project = make_project(base / "origin")
    remote = base / "dvc-remote"
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  [f"download.base_url={fake_archives.archives.as_uri()}"])
    dvc(project, "remote", "add", "-d", "local", str(remote))
    repro = dvc(project, "repro", "build_metadata")
    assert "Running stage 'download'" in repro.stdout
    dvc(project, "push")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "data v1")
    return project, remote


def test_push_fills_the_remote_with_every_cached_output(pushed):
    project, remote = pushed
    status = dvc(project, "status", "--cloud")
    assert "Cache and remote 'local' are in sync" in status.stdout
    assert any(p.is_file() for p in (remote / "files" / "md5").rglob("*"))


def test_fresh_clone_pulls_and_repro_does_nothing(pushed, tmp_path):
    project, _ = pushed
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    # Cached outputs live in the remote, not in git (metrics with cache: false are in git).
    assert not (clone / "data" / "raw").exists()
    assert not (clone / "data" / "metadata" / "images.parquet").exists()

    # Only the stages that ran have outputs (a full project: plain `dvc pull`).
    dvc(clone, "pull", "--with-deps", "build_metadata")
    for out in ("data/raw", "data/metadata"):
        assert relative_files(clone / out) == relative_files(project / out), out
    status = dvc(clone, "status", "--with-deps", "build_metadata").stdout
    assert "Data and pipelines are up to date" in status
    repro = dvc(clone, "repro", "build_metadata")
    assert "Running stage" not in repro.stdout
    assert "didn't change, skipping" in repro.stdout


def test_mlflow_store_is_neither_a_dvc_output_nor_in_git(pushed):
    project, _ = pushed
    assert (project / "mlflow.db").is_file()  # the stages did log to the local store
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = [o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])]
    assert outs and not any(o.startswith(("mlflow.db", "mlruns")) for o in outs)
    tracked = run(project, "git", "ls-files").stdout.split()
    assert not any(p.startswith(("mlflow.db", "mlruns/")) for p in tracked)
    ignored = run(project, "git", "check-ignore", "mlflow.db", "mlruns/x").stdout.split()
    assert ignored == ["mlflow.db", "mlruns/x"]
