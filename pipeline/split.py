"""Stage split: train/val/test (+ k-fold index) of the usable photos.

Reads ``<build_metadata.output>/images.parquet`` (and, for ``method: official``, the lists in
``<data.raw_dir>/lists``); writes ``<output>/split.parquet`` and ``<output>/summary.json``.
"""

from __future__ import annotations


import mlflow

from dogbreeds.tracking import figures
from dogbreeds.data import metadata
from dogbreeds.data import split
from dogbreeds.tracking import store
from dogbreeds.jsonfile import write_json
from pipeline.common import load_params, project_root, table_path

STAGE = "split"


def main() -> None:
    params = load_params()
    root = project_root()
    cfg = params[STAGE]
    out_dir = root / cfg["output"]
    with store.stage_run(STAGE, root, params={STAGE: cfg},
                            experiment=params["base"]["experiment"]):
        df = metadata.read_table(table_path(params, root, "build_metadata"))
        official = None
        if cfg["method"] == "official":
            official = split.load_official_lists(root / params["data"]["raw_dir"] / "lists")
        result = split.split_dataset(df, cfg["method"], cfg["val_fraction"], cfg["test_fraction"],
                                     cfg["seed"], cfg["folds"], official=official)
        metadata.write_table(result, table_path(params, root, STAGE))
        summary = split.summarize(result)
        write_json(out_dir / "summary.json", summary)

        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)})
        mlflow.log_dict(summary, "summary.json")
        per_breed = {breed: {s: summary["per_breed"][s][breed] for s in split.SPLITS}
                     for breed in summary["per_breed"]["train"]}
        mlflow.log_figure(figures.grouped_count_bars(per_breed, "Photos per breed and split"),
                          "figures/split_counts.png")
    print(f"{STAGE}: " + ", ".join(f"{s} {summary[s]}" for s in split.SPLITS)
          + f" ({cfg['method']}, {summary['folds']} folds)")


if __name__ == "__main__":
    main()
