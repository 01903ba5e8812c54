"""Draw ``docs/benchmarks.png`` from ``benchmarks/results/*.json`` (whatever is there).

    python -m benchmarks.plot
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RESULTS_DIR, ROOT  # noqa: E402

OUTPUT = ROOT / "docs" / "benchmarks.png"


def read(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return None if "skipped" in data else data


def bar_labels(ax, bars, fmt: str) -> None:
    for bar in bars:
        ax.annotate(fmt.format(bar.get_height()), (bar.get_x() + bar.get_width() / 2,
                                                   bar.get_height()),
                    ha="center", va="bottom", fontsize=8)


def stage_ratios() -> list[str]:
    """'1.67x at 724 photos' lines from every run that measured the stage vs its floor."""
    runs = [r for name in ("transfer_cache", "transfer_stage_3000", "transfer_stage_20580")
            if (r := read(name)) is not None and "stage" in r]
    return [f"{r['stage']['ratio_stage_over_floor']:.2f}x at "
            f"{r['inputs']['n_train'] + r['inputs']['n_val']:,} photos"
            for r in sorted(runs, key=lambda r: r["inputs"]["n_train"])]


def main() -> None:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_tr, ax_in), (ax_mem, ax_inf) = axes
    machine = None

    if (tr := read("transfer_cache")) is not None:
        machine = tr["machine"]
        labels = ["cached features\n(1 pass + head)", "recompute backbone\nevery epoch"]
        seconds = [tr["cached"]["total_seconds"], tr["recompute"]["total_seconds"]]
        bars = ax_tr.bar(labels, seconds, color=["tab:green", "tab:gray"])
        bar_labels(ax_tr, bars, "{:.1f} s")
        inp = tr["inputs"]
        ax_tr.set_title(f"Transfer, {inp['epochs']} epochs, {inp['n_train'] + inp['n_val']} photos "
                        f"({inp['backbone']} {inp['image_size']}px): "
                        f"{tr['ratio_recompute_over_cached']:.1f}x", fontsize=10)
        ax_tr.set_ylabel("wall time (s)")
        if stages := stage_ratios():
            ax_tr.text(0.02, 0.97, "features + train_transfer stages\nvs one backbone pass "
                       "(target <= 1.5x):\n" + "\n".join(stages), transform=ax_tr.transAxes,
                       va="top", fontsize=8)

    if (ip := read("input_pipeline")) is not None:
        machine = machine or ip["machine"]
        ips = ip["images_per_second"]
        bars = ax_in.bar([k.replace("_", "\n", 2) for k in ips], list(ips.values()),
                         color=["tab:blue" if k.startswith("project") else "tab:gray"
                                for k in ips])
        bar_labels(ax_in, bars, "{:.0f}")
        ax_in.set_title(f"Input pipeline: decode + resize {ip['inputs']['image_size']}px + flip, "
                        f"{ip['inputs']['n_images']} photos", fontsize=10)
        ax_in.set_ylabel("images/s")
        ax_in.tick_params(axis="x", labelsize=7)

    if (tm := read("train_memory")) is not None:
        machine = machine or tm["machine"]
        runs = tm["runs"]
        n = [r["n_images"] for r in runs]
        ax_mem.plot(n, [r["peak_rss_mib"] for r in runs], "o-", label="peak RSS, training 1 epoch")
        if all("all_images_float32_mib" in r for r in runs):
            ax_mem.plot(n, [r["all_images_float32_mib"] for r in runs], "s--", color="tab:gray",
                        label="all images as one float32 array")
        ax_mem.set_xscale("log")
        ax_mem.set_xlabel("images in the dataset")
        ax_mem.set_ylabel("MiB")
        ax_mem.legend(fontsize=8)
        ax_mem.set_title(f"Training memory ({tm['inputs']['image_size']}px scratch CNN): "
                         f"{tm['ratio_peak_rss_largest_over_smallest']:.2f}x from "
                         f"{n[0]:,} to {n[-1]:,}", fontsize=10)

    if (inf := read("inference")) is not None:
        machine = machine or inf["machine"]
        names = list(inf["pyfunc"])
        p50 = [inf["pyfunc"][k]["p50_ms"] for k in names]
        p95 = [inf["pyfunc"][k]["p95_ms"] for k in names]
        x = range(len(names))
        bars = ax_inf.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
        ax_inf.bar([i + 0.2 for i in x], p95, width=0.4, label="p95", color="tab:orange")
        bar_labels(ax_inf, bars, "{:.0f}")
        ax_inf.set_xticks(list(x), [f"{k}\n{inf['pyfunc'][k]['image_size']}px" for k in names],
                          fontsize=8)
        ax_inf.set_ylabel("ms per photo")
        title = "Single-photo latency, registered pyfunc"
        if inf.get("web"):
            web = inf["web"]
            title += f"; web demo {web['requests_per_second']:.1f} req/s ({web['clients']} clients)"
        ax_inf.set_title(title, fontsize=10)
        ax_inf.legend(fontsize=8)

    notes = []
    if (md := read("metadata")) is not None:
        notes.append(f"build_metadata: {md['build_metadata']['images_per_second']:,.0f} images/s "
                     f"on {md['inputs']['n_images']:,} files, peak RSS +"
                     f"{md['build_metadata']['peak_growth_mib']:.0f} MiB")
    if (dn := read("dvc_noop")) is not None:
        notes.append(f"no-op dvc repro: {dn['dvc_repro_noop_median_seconds']:.1f} s "
                     f"({dn['stages']} stages)")
    if machine:
        notes.append(f"{machine['cpu']}, {machine['nproc']} cores, {machine['ram_gib']} GiB; "
                     "other jobs were running (see load in the JSON)")
    fig.text(0.5, 0.01, "  ·  ".join(notes), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUTPUT, dpi=100)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
