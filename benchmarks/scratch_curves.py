"""Draw ``docs/scratch_curves.png``: the scratch CNN's validation curves, before and after.

Reads ``benchmarks/results/scratch_recipe_<name>.json`` (:mod:`benchmarks.scratch_recipe`) for
each ``--runs`` name; left: validation accuracy per epoch (with the precise-BatchNorm
re-estimate where the run has it), right: validation loss.

    python -m benchmarks.scratch_curves --runs before after
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS_DIR, ROOT  # noqa: E402

OUTPUT = ROOT / "docs" / "scratch_curves.png"


def label(run: dict) -> str:
    return (f"{run['name']}: test top-1 {run['test_top1']:.3f}, "
            f"{run['train_minutes']:.1f} min")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["before", "after"])
    args = parser.parse_args(argv)
    runs = [json.loads((RESULTS_DIR / f"scratch_recipe_{name}.json").read_text())
            for name in args.runs]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in runs:
        h = run["history"]
        line, = acc.plot(h["epoch"], h["val_accuracy"], marker="o", label=label(run))
        acc.plot(h["epoch"], h["accuracy"], ls=":", color=line.get_color(), alpha=0.7)
        loss.plot(h["epoch"], h["val_loss"], marker="o", color=line.get_color(),
                  label=run["name"])
        if run.get("diagnose"):
            d = run["diagnose"]
            acc.plot([r["epoch"] for r in d], [r["val_accuracy_precise_bn"] for r in d],
                     ls="--", color=line.get_color(), alpha=0.6,
                     label=f"{run['name']}: val with precise BatchNorm statistics")
        if "val_loss_smooth" in h:
            loss.plot(h["epoch"], h["val_loss_smooth"], ls="--", color=line.get_color(),
                      alpha=0.6, label=f"{run['name']}: smoothed (early stopping)")
    acc.set(title="validation accuracy (dotted: training)", xlabel="epoch",
            ylabel="accuracy")
    loss.set(title="validation loss", xlabel="epoch", ylabel="loss")
    acc.legend(fontsize=7)
    loss.legend(fontsize=7)
    fig.suptitle("Scratch CNN on the 25-breed dev set (4,168 photos), 2 shared CPU cores")
    fig.tight_layout()
    fig.savefig(OUTPUT, dpi=110)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
