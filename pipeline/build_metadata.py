"""Stage build_metadata: one row per photo (label, size, boxes, health) + summary metrics.

Reads ``data.raw_dir``/``data.breeds`` and the local folders of ``data.sources``; writes
``<output>/images.parquet``, ``<output>/converted/`` (RGB JPEG copies of odd files +
``index.csv`` listing them; always created) and ``<output>/summary.json``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import numpy as np

from dogbreeds.data import convert, metadata, sources, tables
from dogbreeds.jsonfile import write_json
from dogbreeds.tracking import figures, store
from pipeline.common import load_params, project_root

STAGE = "build_metadata"
MAX_PARQUET_ARTIFACT_BYTES = 5 * 2**20  # log the table itself only when it is small


def log_figures(df, per_breed: dict, root: Path, grid_size: int, seed: int) -> None:
    good = metadata.usable(df)
    mlflow.log_figure(figures.count_bars(per_breed, "Usable photos per breed"),
                      "figures/breed_counts.png")
    mlflow.log_figure(figures.size_histogram(good["width"], good["height"]),
                      "figures/image_sizes.png")
    if grid_size > 0 and len(good):
        picks = np.random.default_rng(seed).choice(len(good), min(grid_size, len(good)),
                                                   replace=False)
        sample = good.iloc[np.sort(picks)]
        images = [figures.load_thumbnail(root / p) for p in sample["path"]]
        mlflow.log_figure(figures.image_grid(images, list(sample["breed"]), columns=4,
                                             title="Random photos"), "figures/sample_grid.png")


def main() -> None:
    params = load_params()
    settings = metadata.MetadataSettings.from_params(params)
    root = project_root()
    converted_dir = settings.output / "converted"
    with store.stage_run(STAGE, root, params={"data": params["data"], STAGE: params[STAGE]},
                            experiment=params["base"]["experiment"]):
        start = time.perf_counter()
        try:
            df = metadata.build_metadata(root / settings.raw_dir, settings.breeds,
                                         relative_to=root, local=settings.sources)
        except sources.UnknownLabelError as exc:
            raise SystemExit(f"{STAGE}: {exc}") from None
        scan_seconds = time.perf_counter() - start
        shutil.rmtree(root / converted_dir, ignore_errors=True)  # no stale copies
        (root / converted_dir).mkdir(parents=True)
        df = convert.convert_images(df, root, converted_dir)
        # What was converted and why; also keeps the DVC output dir non-empty (DVC warns).
        converted = df[df["status"] == metadata.CONVERTED][["path", "original_path", "reason"]]
        converted.to_csv(root / converted_dir / "index.csv", index=False)
        parquet = tables.write_stage_table(df, params, root, STAGE)
        summary = metadata.summarize(df, [sources.STANFORD, *(s.name for s in settings.sources)])
        write_json(root / settings.output / "summary.json", summary)

        mlflow.log_metrics({"images": summary["images"], "usable": summary["usable"],
                            "breeds": summary["breeds"], "scan_seconds": scan_seconds,
                            "images_per_second": len(df) / max(scan_seconds, 1e-9),
                            **{f"status_{k}": v for k, v in summary["status"].items()},
                            **{f"usable.{name}": counts["usable"]
                               for name, counts in summary["per_source"].items()}})
        mlflow.log_dict(summary, "summary.json")
        odd = df[df["status"] != metadata.OK][
            ["path", "original_path", "source", "status", "reason"]]
        mlflow.log_text(odd.to_csv(index=False), "odd_files.csv")
        log_figures(df, summary["per_breed"], root, settings.sample_grid, settings.seed)
        if parquet.stat().st_size <= MAX_PARQUET_ARTIFACT_BYTES:
            mlflow.log_artifact(str(parquet))
    print(f"{STAGE}: {summary['images']} files, {summary['usable']} usable, "
          f"{summary['breeds']} breeds, statuses {summary['status']} "
          f"({len(df) / max(scan_seconds, 1e-9):.0f} files/s); usable per source: "
          + ", ".join(f"{name} {counts['usable']}"
                      for name, counts in summary["per_source"].items()))


if __name__ == "__main__":
    main()
