"""Stage build_metadata: `python -m pipeline.build_metadata` on a fake tree with odd files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from dogbreeds.data import metadata, tables
from dogbreeds.profiles import apply_profile
from dogbreeds.tracking import store
from support import fakedata
from support.fakedata import CHIHUAHUA, write_bad_files
from support.project import GIT_ENV, dvc_bin, make_project, run_stage, stage_runs, venv_env


def stage_run_artifacts(project: Path, stage: str) -> tuple[mlflow.entities.Run, set[str]]:
    runs = stage_runs(project, stage)
    assert len(runs) == 1
    client = mlflow.MlflowClient(store.local_tracking_uri(project))
    run = runs[0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    names |= {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    return run, names


def test_stage_writes_table_summary_converted_dir_and_mlflow_run(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    write_bad_files(project / "data" / "raw" / "Images")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  ["base.seed=7"])
    result = run_stage(project, "build_metadata")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usable" in result.stdout

    out = project / "data" / "metadata"
    df = tables.read_table(out / "images.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == len(df) == 18 + 10
    assert summary["usable"] == 18 + 2 + 5 and summary["breeds"] == 3
    assert summary["status"]["converted"] == 5 and summary["status"]["empty"] == 1
    assert len(list((out / "converted" / CHIHUAHUA).glob("*.jpg"))) == 5
    index = pd.read_csv(out / "converted" / "index.csv")
    assert sorted(index["path"]) == sorted(df.loc[df["status"] == "converted", "path"])
    assert all((project / p).is_file() for p in metadata.usable(df)["path"])

    run, artifacts = stage_run_artifacts(project, "build_metadata")
    assert {"figures/breed_counts.png", "figures/sample_grid.png", "figures/image_sizes.png",
            "summary.json", "odd_files.csv", "images.parquet"} <= artifacts
    assert run.data.metrics["usable"] == 25 and run.data.metrics["status_truncated"] == 1
    assert run.data.params["data.breeds"] == "all"
    # a rerun replaces the converted copies instead of accumulating stale ones
    (out / "converted" / CHIHUAHUA / "stale.jpg").write_bytes(b"x")
    assert run_stage(project, "build_metadata").returncode == 0
    assert not (out / "converted" / CHIHUAHUA / "stale.jpg").exists()


def test_stage_with_an_unknown_breed_fails_with_a_clear_message(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", None, ["data.breeds=[Chihuahua, Husky]"])
    result = run_stage(project, "build_metadata")
    assert result.returncode != 0
    assert "unknown breed(s) ['Husky']" in result.stderr


def test_local_source_photos_appear_in_the_metadata_with_their_source(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml", [
        "data.sources=[{name: feedback, path: data/sources/feedback, test_only: false, "
        "new_classes: [mixed, not_a_dog]}, {name: shelter, path: data/sources/shelter, "
        "test_only: true, new_classes: []}]"])
    fakedata.make_source(project / "data/sources/feedback", {"papillon": 4, "not_a_dog": 2})
    fakedata.make_source(project / "data/sources/shelter", {"Chihuahua": 3})
    (project / "data/sources/shelter/Chihuahua/torn.jpg").write_bytes(b"\xff\xd8 cut off")
    result = run_stage(project, "build_metadata")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usable per source: feedback 6, shelter 3, stanford 18" in result.stdout

    out = project / "data" / "metadata"
    df = tables.read_table(out / "images.parquet")
    assert df.groupby("source").size().to_dict() == {"feedback": 6, "shelter": 4, "stanford": 18}
    feedback = df[df["source"] == "feedback"]
    assert feedback["path"].str.startswith("data/sources/feedback/").all()
    assert feedback.loc[feedback["breed"] == "not_a_dog", "new_class"].all()
    assert df.set_index("path").loc["data/sources/shelter/Chihuahua/torn.jpg", "status"] == \
        "unreadable"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_source"]["shelter"] == {"images": 4, "usable": 3, "new_class": 0}
    (run,) = stage_runs(project, "build_metadata")
    assert run.data.metrics["usable.feedback"] == 6

    # The split stage: a test-only source lands only in test; new classes stay out.
    apply_profile(project / "params.yaml", None, ["split.folds=2"])
    result = run_stage(project, "split")
    assert result.returncode == 0, result.stderr[-3000:]
    split = tables.read_table(project / "data" / "split" / "split.parquet")
    assert set(split.loc[split["source"] == "shelter", "split"]) == {"test"}
    assert "not_a_dog" not in set(split["breed"]) and (split["source"] == "feedback").sum() == 4
    assert "shelter 0/0/3" in result.stdout


def test_a_misspelt_source_folder_fails_naming_it_and_the_close_breed(tmp_path, fake_tree):
    project = make_project(tmp_path / "proj")
    shutil.copytree(fake_tree, project / "data" / "raw")
    apply_profile(project / "params.yaml", None, ["data.breeds=all"])
    fakedata.make_source(project / "data/sources/feedback", {"papillon": 1, "golden_retreiver": 2})
    result = run_stage(project, "build_metadata")
    assert result.returncode != 0
    assert "source 'feedback': 1 folder(s) are not a trained breed" in result.stderr
    assert "data/sources/feedback/golden_retreiver: did you mean 'golden_retriever'?" \
        in result.stderr
    assert "Traceback" not in result.stderr                     # a message, not a crash
    assert not (project / "data" / "metadata" / "images.parquet").exists()


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dvc_bin(), *args], cwd=project, env=venv_env(), text=True,
                          capture_output=True, timeout=900)


def changed_stages(status: str) -> set[str]:
    """Stage names in `dvc status` output (lines `<stage>:` flush left)."""
    return {line[:-1] for line in status.splitlines() if line.endswith(":") and line[0] != "\t"}


@pytest.mark.slow
def test_a_new_photo_in_a_source_folder_reruns_what_depends_on_it(tmp_path, fake_archives):
    """A fresh clone has the empty feedback folder; a correction dropped in it makes DVC see
    build_metadata and the stages reading photos as changed, and not download."""
    project = make_project(tmp_path / "proj")
    apply_profile(project / "params.yaml", project / "profiles" / "debug.yaml",
                  [f"download.base_url={fake_archives.archives.as_uri()}"])
    env = venv_env(**GIT_ENV)
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "debug"], cwd=project, check=True, env=env)
    first = dvc(project, "repro", "augment")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert changed_stages(dvc(project, "status", "augment").stdout) == set()

    fakedata.make_source(project / "data/sources/feedback", {"papillon": 1})
    status = dvc(project, "status").stdout
    assert {"build_metadata", "augment"} <= changed_stages(status)
    assert "download" not in changed_stages(status)
    assert "modified:           data/sources" in status

    second = dvc(project, "repro", "augment")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    ran = [line.split("'")[1] for line in second.stdout.splitlines()
           if line.startswith("Running stage")]
    assert ran == ["build_metadata", "split", "augment"]
    df = tables.read_table(project / "data" / "metadata" / "images.parquet")
    assert df.loc[df["source"] == "feedback", "path"].tolist() == [
        "data/sources/feedback/papillon/papillon_0.jpg"]

    # The feedback store's bookkeeping is not data: a record rewritten when a photo is
    # confirmed again, a lock, a staged file must not rerun anything (.dvcignore).
    feedback = project / "data/sources/feedback"
    for name in (".records/abc.json", ".locks/abc.lock", ".staging/abc.part"):
        (feedback / name).parent.mkdir(parents=True, exist_ok=True)
        (feedback / name).write_text("{}", encoding="utf-8")
    assert changed_stages(dvc(project, "status", "augment").stdout) == set()
