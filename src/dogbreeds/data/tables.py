"""The image tables the data stages pass on: their columns, where each lives, how it is stored.

``build_metadata`` writes ``images.parquet`` (one row per photo file), ``split`` adds
``split``/``fold`` in ``split.parquet``, and ``augment`` appends its copies in
``dataset.parquet``, the table every model stage reads. Each sits in its stage's ``output``
folder. Every stage and library function reads and writes them through this module, so the
``boxes`` column keeps its type (a list of ``[xmin, ymin, xmax, ymax]`` int lists) even
when every photo has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dogbreeds.settings import value

#: The table each stage writes into its ``output`` folder for the stages after it.
TABLES = {"build_metadata": "images.parquet", "split": "split.parquet",
          "augment": "dataset.parquet"}

#: The metadata contract: every table starts with these columns (split adds split, fold).
#: ``source`` names where the photo came from (``stanford`` or a ``data.sources`` name),
#: ``original_path`` the file this row was made from (the raw file of a converted copy, the
#: original of an augmented one), ``new_class`` marks a label that is not a trained breed
#: (``mixed``, ``not_a_dog``: recorded, kept out of the classifier). ``sha256`` is the hash
#: (:func:`dogbreeds.hashing.file_sha256`) of the raw file the row descends from (its own
#: bytes before any conversion; an augmented copy keeps its original's): ``split`` keeps
#: byte-identical photos in one split. ``""`` = unknown (unusable file, or a table made
#: before the column existed): the row is nobody's duplicate.
COLUMNS = ["path", "breed", "wnid", "folder", "width", "height", "channels", "format", "bytes",
           "boxes", "n_boxes", "status", "reason", "origin", "source", "original_path",
           "new_class", "sha256"]
#: The ``source`` of the Stanford archives' photos (also of rows made before sources existed).
STANFORD_SOURCE = "stanford"
_INT_COLUMNS = ("width", "height", "channels", "bytes", "n_boxes")
_DEFAULTS = {"source": STANFORD_SOURCE, "new_class": False}
_BOXES_TYPE = pa.list_(pa.list_(pa.int32()))


def table_path(params: Mapping[str, Any], root: Path, stage: str) -> Path:
    """Where ``stage`` writes its table: ``<root>/<params[stage].output>/<TABLES[stage]>``.

    Raises:
        KeyError: for a stage that writes no table.
        SettingsError: when ``<stage>.output`` is missing or not a path.
    """
    if stage not in TABLES:
        raise KeyError(f"stage {stage!r} writes no table; tables: {sorted(TABLES)}")
    return Path(root) / value(params, f"{stage}.output", Path) / TABLES[stage]


def as_table(rows: Iterable[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Rows → DataFrame with the contract's columns first and stable dtypes (even when empty).

    Missing columns are filled with 0, ``""``, no boxes, ``stanford`` (source), False
    (new_class) or the row's own ``path`` (original_path).
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column in df:
            continue
        if column == "boxes":
            df[column] = pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
        elif column == "original_path":
            df[column] = df["path"] if "path" in df else ""
        else:
            df[column] = _DEFAULTS.get(column, 0 if column in _INT_COLUMNS else "")
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    return df.astype({**{c: "int64" for c in _INT_COLUMNS}, "new_class": bool})


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write a table to parquet with ``boxes`` typed even when all are empty; return ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = df.reset_index(drop=True)
    if "boxes" not in df:
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
        return path
    table = pa.Table.from_pandas(df.drop(columns="boxes"), preserve_index=False)
    boxes = pa.array([[list(map(int, b)) for b in boxes] for boxes in df["boxes"]],
                     type=_BOXES_TYPE)
    pq.write_table(table.add_column(list(df.columns).index("boxes"), "boxes", boxes), path)
    return path


def read_table(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (``boxes`` as lists of int lists).

    Args:
        columns: Read only these (all by default).
    """
    df = pd.read_parquet(path, columns=list(columns) if columns is not None else None)
    if "boxes" in df:
        df["boxes"] = [[list(map(int, b)) for b in boxes] for boxes in df["boxes"]]
    return df


def read_stage_table(params: Mapping[str, Any], root: Path, stage: str,
                     columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The table ``stage`` wrote (see :func:`table_path`)."""
    return read_table(table_path(params, root, stage), columns)


def write_stage_table(df: pd.DataFrame, params: Mapping[str, Any], root: Path,
                      stage: str) -> Path:
    """Write ``stage``'s table where the next stages read it; return its path."""
    return write_table(df, table_path(params, root, stage))
