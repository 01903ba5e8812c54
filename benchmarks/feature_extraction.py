"""Feature extraction: images/s of the frozen backbone pass the ``features`` stage runs.

Same images, one process, after an untimed warm-up (graph tracing, page cache), the two paths
interleaved ``--repeats`` times and the median kept:

- ``pass``: :func:`dogbreeds.models.features.extract_features` from the JPEG files (tf.data
  decode + resize, then the frozen backbone): what ``features@<backbone>`` pays per image;
- ``backbone_only``: the same extractor's ``predict`` on the already decoded batch in memory:
  the floor without decoding.

The ratio (pass over backbone-only time) is what the input pipeline adds to the backbone.
Random weights (``weights none``): timing is the same as with pretrained ones. Formerly a
print-only "test" in tests/unit/models/test_features.py (MobileNetV2 at 160 px, batch 32).

    python -m benchmarks.feature_extraction [--images 96] [--image-size 160] \
        [--backbone mobilenetv2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load, ratio, synthetic_tree, write_result

NAME = "feature_extraction"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--breeds", type=int, default=3)
    parser.add_argument("--backbone", default="mobilenetv2")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = load()
    from dogbreeds.data.datasets import make_dataset
    from dogbreeds.models import features

    df = synthetic_tree(f"features{args.images}", args.images, args.breeds, (500, 375), jitter=60)
    name, size, batch = args.backbone, args.image_size, args.batch_size
    extractor = features.feature_extractor(name, None, size, "avg")
    decoded = np.concatenate([x.numpy() for x in make_dataset(
        df, sorted(set(df["breed"])), size, batch, root=Path("/"), with_labels=False)])

    def run_pass():
        return features.extract_features(df, name, None, size, "avg", batch, Path("/"),
                                         extractor=extractor)

    def run_backbone_only():
        return extractor.predict(decoded, batch_size=batch, verbose=0)

    runs = {"pass": run_pass, "backbone_only": run_backbone_only}
    shapes = {label: run().shape for label, run in runs.items()}  # warm-up
    seconds: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(args.repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[label].append(time.perf_counter() - start)
    rates = {label: round(len(df) / statistics.median(t), 3) for label, t in seconds.items()}
    result = {
        "inputs": {"images": len(df), "breeds": args.breeds, "backbone": name,
                   "image_size": size, "batch_size": batch, "weights": "none",
                   "repeats": args.repeats, "source": "synthetic 500x375 (±60) JPEGs"},
        "images_per_second": rates,
        "seconds": {label: [round(s, 3) for s in t] for label, t in seconds.items()},
        "feature_shape": list(shapes["pass"][1:]),
        "ratio_pass_time_over_backbone_only": ratio(rates["backbone_only"], rates["pass"]),
    }
    print(f"{NAME}: {name} @{size} px, {len(df)} images, batch {batch}: pass "
          f"{rates['pass']:.1f} images/s, backbone only {rates['backbone_only']:.1f} images/s "
          f"(the pass takes {result['ratio_pass_time_over_backbone_only']:.2f}x the backbone's "
          f"time); features {result['feature_shape']}")
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
