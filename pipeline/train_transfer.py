"""Stage `train_transfer@<backbone>`: a head on cached features, optionally fine-tuned.

``python -m pipeline.train_transfer mobilenetv2`` reads ``data/features/mobilenetv2/`` (and
the images only when ``fine_tune_layers > 0``) and writes ``models/mobilenetv2/``; the saved
model takes raw 0–255 images. Work state lives in ``checkpoints/<backbone>/``.
"""

from __future__ import annotations

from dogbreeds.data import datasets, tables
from dogbreeds.models import features, fit, transfer
from dogbreeds.models.distribute import make_strategy
from dogbreeds.tracking import store
from pipeline.common import backbone_argument, load_params, project_root

STAGE = "train_transfer"


def main(argv: list[str] | None = None) -> None:
    name = backbone_argument(STAGE, argv)
    params = load_params()
    root = project_root()
    base = fit.BaseSettings.from_params(params)
    settings = transfer.TransferSettings.from_params(params, name)

    with store.stage_run(STAGE, root,
                         params={"base": params["base"], STAGE: params[STAGE], "backbone": name},
                         experiment=base.experiment, run_name=f"{STAGE}@{name}",
                         extra_tags={"backbone": name}):
        cache = features.load_feature_cache(root / settings.cache_dir)
        frames = None
        if settings.fine_tunes:
            df = tables.read_stage_table(params, root, "augment")
            train_df, val_df, _ = datasets.training_frames(df, settings.use_augmented)
            frames = (train_df, val_df)
        metrics = transfer.train_transfer(cache, settings, root=root, image_frames=frames,
                                          strategy=make_strategy(base.distribute))
        print(f"{STAGE}@{name}: val_accuracy {metrics['val_accuracy']:.3f} "
              f"(head {metrics['head_seconds']:.1f} s vs backbone pass "
              f"{metrics['backbone_pass_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
