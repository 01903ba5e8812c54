"""Metadata: ``build_metadata`` images/s on 20,580 photo-sized files, and its peak memory.

Input: 20,580 synthetic JPEGs (~500×375 like Stanford Dogs, ± 60 px) in 120 breed folders with a
Pascal-VOC XML each, generated once under ``$DOGBREEDS_BENCH_DIR/metadata`` and reused.

Measured: wall time of :func:`dogbreeds.data.metadata.build_metadata` over all of them (warm page
cache: every file is read once first), images/s, and its memory: the process's peak RSS
growth during the call (``resource.getrusage`` high-water mark minus the RSS before it) and,
in a second untimed call, the peak of Python-level allocations (``tracemalloc``). The
baseline is the naive alternative: decoding every image fully (``cv2.imread``) to learn its
size, on a ``--baseline-files`` subset, single-threaded.

    python -m benchmarks.metadata [--images 20580] [--workers 4]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

from benchmarks.common import (
    SCRATCH,
    load,
    peak_rss_mib,
    ratio,
    rss_mib,
    synthetic_tree,
    timed,
    write_result,
)

NAME = "metadata"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20580)
    parser.add_argument("--breeds", type=int, default=120)
    parser.add_argument("--workers", type=int, default=4, help="build_metadata's threads")
    parser.add_argument("--baseline-files", type=int, default=2000)
    args = parser.parse_args(argv)
    load_before = load()

    import cv2

    from dogbreeds.data.metadata import build_metadata

    with timed() as t_gen:
        files = synthetic_tree("metadata", args.images, args.breeds, (500, 375), jitter=60,
                               annotations=True)
    raw_dir = SCRATCH / "metadata"
    total_mib = sum(Path(p).stat().st_size for p in files["path"]) / 2 ** 20
    print(f"{NAME}: {len(files)} JPEGs in {args.breeds} folders ({total_mib:.0f} MiB; "
          f"ready in {t_gen['seconds']:.0f} s), {args.workers} workers")

    for path in files["path"]:  # warm page cache, so disk speed does not decide the number
        Path(path).read_bytes()
    rss_before, peak_before = rss_mib(), peak_rss_mib()
    with timed() as t_build:
        df = build_metadata(raw_dir, "all", workers=args.workers)
    peak_after = peak_rss_mib()
    peak_growth = max(0.0, peak_after - rss_before)
    tracemalloc.start()  # second, untimed call: Python-level allocations (tracing is slow)
    build_metadata(raw_dir, "all", workers=args.workers)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    table_mib = df.memory_usage(deep=True).sum() / 2 ** 20
    ips = len(df) / t_build["seconds"]
    print(f"  build_metadata: {len(df)} rows in {t_build['seconds']:.1f} s = {ips:.0f} images/s; "
          f"statuses {df['status'].value_counts().to_dict()}; boxes {int(df['n_boxes'].sum())}")
    print(f"  memory: RSS before {rss_before:.0f} MiB, peak {peak_after:.0f} MiB "
          f"(growth {peak_growth:.0f} MiB; tracemalloc peak {traced_peak:.0f} MiB; the "
          f"table itself {table_mib:.1f} MiB)")

    subset = list(files["path"][:: max(1, len(files) // args.baseline_files)])[
        : args.baseline_files]
    start = time.perf_counter()
    for path in subset:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        _ = image.shape
    naive_ips = len(subset) / (time.perf_counter() - start)
    speedup = ratio(ips, naive_ips)
    print(f"  baseline full decode (cv2.imread, 1 thread): {naive_ips:.0f} images/s on "
          f"{len(subset)} files → build_metadata is {speedup:.1f}x faster")

    result = {
        "inputs": {"n_images": len(files), "n_breeds": args.breeds, "size": "500x375 ± 60 px",
                   "total_mib": round(total_mib, 1), "annotations": True,
                   "workers": args.workers},
        "build_metadata": {"seconds": round(t_build["seconds"], 3),
                           "images_per_second": round(ips, 1), "rows": len(df),
                           "rss_before_mib": round(rss_before, 1),
                           "peak_rss_mib": round(peak_after, 1),
                           "peak_before_call_mib": round(peak_before, 1),
                           "peak_growth_mib": round(peak_growth, 1),
                           "tracemalloc_peak_mib": round(traced_peak, 1),
                           "table_mib": round(table_mib, 2)},
        "baseline_full_decode": {"files": len(subset), "images_per_second": round(naive_ips, 1)},
        "ratio_build_metadata_over_full_decode": speedup,
    }
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
