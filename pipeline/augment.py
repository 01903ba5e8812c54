"""Stage augment: OpenCV copies of the training photos + the table every model stage reads.

Reads ``<split.output>/split.parquet``; writes ``<output>/images/<folder>/<stem>_aug<k>.jpg``
(only when enabled) and ``<output>/dataset.parquet`` (split rows + augmented rows).
"""

from __future__ import annotations

import shutil
import time

import mlflow

from dogbreeds.data import augment, tables
from dogbreeds.tracking import figures, store
from pipeline.common import load_params, project_root

STAGE = "augment"
PREVIEW_PHOTOS = 4


def main() -> None:
    params = load_params()
    settings = augment.AugmentStageSettings.from_params(params)
    root = project_root()
    images_dir = root / settings.output / "images"
    with store.stage_run(STAGE, root, params={STAGE: params[STAGE]},
                            experiment=params["base"]["experiment"]):
        split_df = tables.read_stage_table(params, root, "split")
        shutil.rmtree(images_dir, ignore_errors=True)  # no stale copies from other settings
        start = time.perf_counter()
        if settings.enabled:
            augmented = augment.augment_split(split_df, root, images_dir, settings.images)
        else:
            augmented = split_df.iloc[0:0]
        seconds = time.perf_counter() - start
        dataset = augment.build_dataset(split_df, augmented)
        tables.write_stage_table(dataset, params, root, STAGE)

        summary = augment.summarize(dataset)
        mlflow.log_metrics({**summary, "seconds": seconds,
                            "images_per_second": len(augmented) / max(seconds, 1e-9)})
        if len(augmented):
            originals, copies, labels = augment.preview(augmented, root, PREVIEW_PHOTOS,
                                                        settings.images.seed)
            mlflow.log_figure(figures.augmentation_rows(originals, copies, labels),
                              "figures/augmentations.png")
    print(f"{STAGE}: {summary['augmented']} augmented copies of {summary['train_originals']} "
          f"training photos in {seconds:.1f} s")


if __name__ == "__main__":
    main()
