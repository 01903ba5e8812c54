"""What every stage module shares: the params file, the project root, the backbone argument.

Where each stage's table lives, and how it is read and written: :mod:`dogbreeds.data.tables`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"


def project_root() -> Path:
    """DVC runs every stage from the project root (where dvc.yaml lives)."""
    return Path.cwd()


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """The whole params.yaml as a dict."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def backbone_argument(stage: str, argv: list[str] | None = None) -> str:
    """The one positional argument of a per-backbone stage (`python -m pipeline.<stage> NAME`)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m pipeline.{stage} <backbone>")
    return argv[0]
