"""Lineage tags of a registered version: DVC data hashes from dvc.lock, run and commit."""

from __future__ import annotations

from dogbreeds.tracking import lineage

LOCK = ("schema: '2.0'\nstages:\n"
        "  augment:\n    cmd: x\n    outs:\n    - path: data/augmented\n      md5: abc.dir\n"
        "  download:\n    cmd: y\n    outs:\n    - path: data/raw\n      md5: def.dir\n")


def test_dvc_lock_hashes(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(LOCK)
    assert lineage.data_version_tags(lock, "data/augmented", "data/raw") == {
        "data.augment_md5": "abc.dir", "data.raw_md5": "def.dir"}
    assert lineage.dvc_out_md5(lock, "augment", "other") is None
    assert lineage.data_version_tags(tmp_path / "missing.lock") == {}


def test_trace_tags(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(LOCK)
    stage_tags = {"dogbreeds.stage": "evaluate", "git_commit": "c0ffee",
                  "mlflow.source.git.commit": "c0ffee"}
    assert lineage.trace_tags("run-1", "val_accuracy", stage_tags, lock, "data/augmented",
                              "data/raw") == {
        "evaluation_run_id": "run-1", "selected_by": "val_accuracy", "git_commit": "c0ffee",
        "data.augment_md5": "abc.dir", "data.raw_md5": "def.dir"}
    # Outside git and before any `dvc repro`: only what is known.
    assert lineage.trace_tags("run-2", "val_loss", {}, tmp_path / "none.lock", "a", "b") == {
        "evaluation_run_id": "run-2", "selected_by": "val_loss"}
