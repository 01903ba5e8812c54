"""End to end: `dvc repro` of the whole pipeline on tiny archives served on 127.0.0.1.

One project is reproduced once (module-scoped) and the tests read what it left: DVC outputs,
the MLflow store and the model registry; then a no-op repro and a head-only change.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from dogbreeds.profiles import apply_profile
from support.project import GIT_ENV, dvc_bin, make_project, venv_env
from support.servers import serve_directory

pytestmark = pytest.mark.slow

STAGES = ["download", "build_metadata", "split", "augment", "train_scratch", "tune",
          "features", "train_transfer", "evaluate"]


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dvc_bin(), *args], cwd=project, env=venv_env(), text=True,
                          capture_output=True, timeout=1800)


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def commit_all(project: Path, message: str) -> None:
    env = venv_env(**GIT_ENV)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=project, check=True, env=env)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, fake_archives):
    """A project whose full `dvc repro` ran once on the debug profile."""
    project = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    checksums = json.dumps(fake_archives.checksums())   # JSON is YAML: one flow mapping
    with serve_directory(fake_archives.archives) as url:
        apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                      [f"download.base_url={url}", "download.verify=true",
                       f"download.checksums={checksums}"])
        commit_all(project, "debug profile")
        result = dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return project, result


def mlflow_runs(project: Path) -> list[tuple[str, str, str]]:
    """(run_id, stage tag, status) of every run in the project's store."""
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(
            "SELECT r.run_uuid, t.value, r.status FROM runs r JOIN tags t "
            "ON t.run_uuid = r.run_uuid AND t.key = 'dogbreeds.stage'").fetchall()


def test_every_stage_ran_and_wrote_its_outputs(reproduced):
    project, result = reproduced
    ran = ran_stages(result.stdout)
    for stage in STAGES:
        assert any(name.split("@")[0] == stage for name in ran), f"{stage} did not run: {ran}"
    assert (project / "data/raw/Images").is_dir()
    assert (project / "data/metadata/images.parquet").is_file()
    assert (project / "data/split/split.parquet").is_file()
    assert (project / "data/augmented/dataset.parquet").is_file()
    for name in ("scratch", "scratch_tuned", "mobilenetv2"):
        card = json.loads((project / "models" / name / "card.json").read_text())
        assert card["classes"] == sorted(fake_breeds(project))
        assert (project / "models" / name / "model.keras").stat().st_size > 0
    assert (project / "reports/comparison.csv").is_file()


def fake_breeds(project: Path) -> list[str]:
    return [p.name.split("-", 1)[1] for p in (project / "data/raw/Images").iterdir()]


def test_every_stage_is_an_mlflow_run(reproduced):
    project, _ = reproduced
    runs = mlflow_runs(project)
    stages = {stage for _, stage, _ in runs}
    assert set(STAGES) <= stages
    assert all(status == "FINISHED" for _, _, status in runs)


def test_metrics_are_visible_to_dvc(reproduced):
    project, _ = reproduced
    shown = dvc(project, "metrics", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for path in ("models/scratch/metrics.json", "models/mobilenetv2/metrics.json",
                 "reports/metrics.json"):
        assert path in text


def test_champion_is_registered(reproduced):
    project, _ = reproduced
    with sqlite3.connect(project / "mlflow.db") as db:
        aliases = db.execute("SELECT name, alias, version FROM registered_model_aliases").fetchall()
    assert ("dogbreeds", "champion", 1) in aliases


def test_second_repro_does_nothing(reproduced):
    project, _ = reproduced
    status = dvc(project, "status")
    assert "up to date" in status.stdout, status.stdout
    again = dvc(project, "repro")
    assert again.returncode == 0
    assert ran_stages(again.stdout) == []


def test_head_change_reuses_the_feature_cache(reproduced):
    project, _ = reproduced
    apply_profile(project / "params.yaml", None, ["train_transfer.dense=[8]"])
    result = dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert sorted(ran_stages(result.stdout)) == ["evaluate", "train_transfer@mobilenetv2"]
    with sqlite3.connect(project / "mlflow.db") as db:
        versions = db.execute(
            "SELECT version FROM model_versions WHERE name = 'dogbreeds'").fetchall()
        aliases = dict(db.execute(
            "SELECT alias, version FROM registered_model_aliases").fetchall())
    metrics = json.loads((project / "reports/metrics.json").read_text())
    if metrics["selected"]["model"] == "mobilenetv2":   # the retrained head was selected
        assert len(versions) == 2                          # a new version, nothing overwritten
        assert aliases["champion"] == 2 or aliases.get("challenger") == 2
    else:                                                  # an unchanged model was selected
        assert len(versions) == 1 and metrics["registry"]["reason"].startswith("unchanged")
    assert aliases.get("champion") in (1, 2)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert "train_transfer@mobilenetv2" in lock["stages"]


def test_adding_a_backbone_leaves_the_other_heads_alone(reproduced):
    project, _ = reproduced
    apply_profile(project / "params.yaml", None,
                  ["train_transfer.backbones=[mobilenetv2, efficientnetv2b0]"])
    result = dvc(project, "status", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    changed = set(json.loads(result.stdout))
    assert {"features@efficientnetv2b0", "train_transfer@efficientnetv2b0"} <= changed
    assert not changed & {"features@mobilenetv2", "train_transfer@mobilenetv2"}, changed
