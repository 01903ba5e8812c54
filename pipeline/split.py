"""Stage split: train/val/test (+ k-fold index) of the usable photos.

Reads ``<build_metadata.output>/images.parquet``, ``data.sources`` (which are test-only) and,
for ``method: official``, the lists in ``<data.raw_dir>/lists``; writes
``<output>/split.parquet`` and ``<output>/summary.json``.
"""

from __future__ import annotations

import mlflow

from dogbreeds.data import split, tables
from dogbreeds.jsonfile import write_json
from dogbreeds.tracking import figures, store
from pipeline.common import load_params, project_root

STAGE = "split"


def main() -> None:
    params = load_params()
    settings = split.SplitSettings.from_params(params)
    root = project_root()
    with store.stage_run(STAGE, root, params={STAGE: params[STAGE]},
                            experiment=params["base"]["experiment"]):
        df = tables.read_stage_table(params, root, "build_metadata")
        official = None
        if settings.method == "official":
            official = split.load_official_lists(root / settings.lists_dir)
        result = split.split_dataset(df, settings.method, settings.val_fraction,
                                     settings.test_fraction, settings.seed, settings.folds,
                                     official=official, test_only=settings.test_only)
        tables.write_stage_table(result, params, root, STAGE)
        summary = split.summarize(result)
        write_json(root / settings.output / "summary.json", summary)

        mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, int)})
        mlflow.log_metrics({f"{s}.{source}": n for source, counts in summary["per_source"].items()
                            for s, n in counts.items()})
        mlflow.log_dict(summary, "summary.json")
        per_breed = {breed: {s: summary["per_breed"][s][breed] for s in split.SPLITS}
                     for breed in summary["per_breed"]["train"]}
        mlflow.log_figure(figures.grouped_count_bars(per_breed, "Photos per breed and split"),
                          "figures/split_counts.png")
    print(f"{STAGE}: " + ", ".join(f"{s} {summary[s]}" for s in split.SPLITS)
          + f" ({settings.method}, {summary['folds']} folds); per source: "
          + "; ".join(f"{source} " + "/".join(str(counts[s]) for s in split.SPLITS)
                      for source, counts in summary["per_source"].items()))


if __name__ == "__main__":
    main()
