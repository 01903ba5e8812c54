"""``dogbreeds models`` and ``dogbreeds promote``: read and move aliases by hand.

``models`` lists every registered version with its aliases and metrics; ``promote`` points an
alias at a version (a manual promotion, or a rollback to an earlier champion). Both use the
project's store (:func:`dogbreeds.tracking.store.use_store`; ``MLFLOW_TRACKING_URI`` wins).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dogbreeds.tracking.registry import (
    CHAMPION,
    TAG_GATE_ACCURACY,
    TAG_GATE_SOURCE,
    TAG_TEST_ACCURACY,
    version_with_alias,
)
from dogbreeds.tracking.store import use_store

COLUMNS = ["version", "aliases", "model", "val_acc", "test_acc", "judged_on", "judged_acc",
           "ece", "coverage", "created", "run_id"]


def _client() -> MlflowClient:
    use_store(Path.cwd())  # MLFLOW_TRACKING_URI wins when set
    return MlflowClient()


def cli_promote(name: str, version: str | int, alias: str = CHAMPION) -> int:
    """Point ``alias`` at ``version`` (manual promotion or rollback). Returns an exit code."""
    client = _client()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        print(f"error: model {name!r} has no version {version}", file=sys.stderr)
        return 1
    holder = version_with_alias(client, name, alias)
    previous = None if holder is None else str(holder.version)
    client.set_registered_model_alias(name, alias, str(version))
    was = f" (was version {previous})" if previous else ""
    print(f"{name}@{alias} -> version {version}{was}")
    return 0


def versions_table(client: MlflowClient, name: str) -> pd.DataFrame:
    """One row per registered version, newest first."""
    versions = client.search_model_versions(f"name='{name}'")
    # search results do not carry aliases: read them from the registered model.
    by_version: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for v in versions:
        tags = v.tags or {}
        kind = tags.get("kind", "")
        backbone = tags.get("backbone", "")
        rows.append({
            "version": int(v.version),
            "aliases": ",".join(sorted(by_version.get(str(v.version), []))),
            "model": f"{kind}/{backbone}" if backbone else kind,
            "val_acc": _fmt(tags.get("val_accuracy")),
            "test_acc": _fmt(tags.get(TAG_TEST_ACCURACY)),
            # which test photos judged it against the champion, and its accuracy there
            "judged_on": tags.get(TAG_GATE_SOURCE, ""),
            "judged_acc": _fmt(tags.get(TAG_GATE_ACCURACY)),
            # calibrated test ECE and candidate-set coverage (versions with a trust bundle)
            "ece": _fmt(tags.get("test_ece_calibrated")),
            "coverage": _fmt(tags.get("test_coverage")),
            "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC)
            .strftime("%Y-%m-%d %H:%M"),
            "run_id": v.run_id or "",
        })
    return pd.DataFrame(rows, columns=COLUMNS).sort_values("version", ascending=False) \
        .reset_index(drop=True)


def _fmt(value: str | None) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return ""


def cli_models(name: str) -> int:
    """Print the registered versions of ``name``. Returns an exit code."""
    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        print(f"error: no registered model {name!r} in {mlflow.get_tracking_uri()}",
              file=sys.stderr)
        return 1
    table = versions_table(client, name)
    if table.empty:
        print(f"{name}: no versions")
        return 0
    print(table.to_string(index=False))
    return 0
