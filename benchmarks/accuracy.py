"""Accuracy: the comparison table that the ``evaluate`` stage wrote, with its run's context.

Training is the pipeline's job, not a benchmark's: this reads ``reports/comparison.csv`` from
a project where ``dvc repro`` finished (``--project``, default this one; e.g. after
``make repro-sample`` on the real 4-breed sample), prints it and stores it in
``benchmarks/results/accuracy.json`` with the data profile it came from (breeds, image count).

    python -m benchmarks.accuracy [--project PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from benchmarks.common import ROOT, load, write_result
from dogbreeds.data import tables
from pipeline.common import PARAMS_FILE, load_params

NAME = "accuracy"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    load_before = load()
    project = args.project.resolve()
    table_path = project / "reports" / "comparison.csv"
    if not table_path.is_file():
        print(f"{NAME}: skipped — no {table_path} (run the pipeline there first)")
        result = {"skipped": f"no {table_path}"}
        write_result(NAME, result, load_before)
        return result
    table = pd.read_csv(table_path)
    params = load_params(project / PARAMS_FILE)
    images = None
    split_table = tables.table_path(params, project, "split")
    if split_table.is_file():
        split = tables.read_table(split_table, columns=["split"])
        images = split["split"].value_counts().to_dict()
    print(f"{NAME}: {table_path}  (breeds {params['data']['breeds']}, images {images})")
    print(table.to_string(index=False))
    weights = str(params["train_transfer"].get("weights"))
    # Names, not paths: the result is committed, and machine paths do not belong in the repo.
    result = {"project": project.name, "breeds": params["data"]["breeds"],
              "images_by_split": images,
              "weights": Path(weights).name if "/" in weights else weights,
              "comparison": table.to_dict(orient="records"),
              "note": "test accuracy; ImageNet-pretrained backbones have seen some Stanford "
                      "Dogs test photos, and the offline MobileNetV2 weights were fine-tuned "
                      "on 19 Stanford Dogs breeds: their numbers are flattered."}
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
