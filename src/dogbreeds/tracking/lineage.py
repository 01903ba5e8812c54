"""Where a registered version came from: the evaluation run, the git commit, the data.

Every version the ``evaluate`` stage registers carries these as tags, so a model in the
registry can be traced back to the code and the exact data (DVC hashes from ``dvc.lock``: the
``augment`` stage's output — the table and images every model trains and is tested on — and
the raw download) it was built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml


def dvc_out_md5(lock_file: Path, stage: str, out_path: str | None = None) -> str | None:
    """The md5 DVC recorded in ``dvc.lock`` for a stage's output (None when unknown).

    Args:
        lock_file: ``dvc.lock``.
        stage: stage name (e.g. ``augment``, ``download``).
        out_path: which output of the stage; its first output when omitted.
    """
    try:
        lock = yaml.safe_load(Path(lock_file).read_text(encoding="utf-8")) or {}
    except OSError:
        return None
    outs = (lock.get("stages", {}).get(stage) or {}).get("outs") or []
    for out in outs:
        if out_path is None or Path(out["path"]) == Path(out_path):
            return out.get("md5")
    return None


def data_version_tags(lock_file: Path, augment_out: str | None = None,
                      raw_out: str | None = None) -> dict[str, str]:
    """DVC data hashes that trace a version back to its data (present ones only)."""
    tags = {
        "data.augment_md5": dvc_out_md5(lock_file, "augment", augment_out),
        "data.raw_md5": dvc_out_md5(lock_file, "download", raw_out),
    }
    return {k: v for k, v in tags.items() if v}


def trace_tags(evaluation_run_id: str, selected_by: str, stage_tags: Mapping[str, str],
               lock_file: Path, augment_out: str, raw_out: str) -> dict[str, str]:
    """The lineage tags of a version: evaluation run, selection metric, git commit (when the
    stage knows it) and the DVC data hashes found in ``lock_file``."""
    return {
        "evaluation_run_id": evaluation_run_id,
        "selected_by": selected_by,
        **{k: v for k, v in stage_tags.items() if k == "git_commit"},
        **data_version_tags(lock_file, augment_out, raw_out),
    }
