"""The prediction log's cost per request: what logging an answer adds to the web demo.

- **one answer logged**, one at a time (what a request adds: SHA-256 of the upload, in the
  thread pool with the decoding, then its row committed by the log's writer thread, WAL), for
  a 48 px test JPEG, a 500×375 photo and a 12 MP phone-sized JPEG;
- **contention**: 16 threads logging at once (rows/s, commits — the writer groups the rows
  queued together — and per-row p50/p95 until committed);
- **the demo with vs without the log**: the tiny test classifier (``tests/support``; the
  cheapest model, so the log's share is as large as it gets) served by uvicorn in-process, the
  same photo, sequential requests alternating between the two servers in blocks, then 8
  concurrent clients.

    python -m benchmarks.predlog [--calls 300] [--requests 400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from benchmarks.common import ROOT, load, ratio, synthetic_image, write_result
from benchmarks.inference import percentiles

NAME = "predlog"
sys.path.insert(0, str(ROOT / "tests"))  # the tiny registered classifier of the tests


def jpeg(width: int, height: int, seed: int = 0) -> bytes:
    image = synthetic_image(1, np.random.default_rng(seed), width, height)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def log_answer(log, photo: bytes, answer: dict, info: dict) -> bool:
    """What a request adds: hash the upload, queue the row, wait for its commit."""
    from dogbreeds import hashing
    from dogbreeds.serving.records import logged_row

    return log.append(logged_row(hashing.digest(photo), answer, info, 12.0))


def log_alone(folder: Path, photo: bytes, calls: int) -> dict:
    from dogbreeds.serving.predlog import PredictionLog

    log = PredictionLog(folder / f"alone-{len(photo)}.sqlite", retention_days=90)
    answer = {"status": "ok", "breed": "papillon", "probability": 0.9, "novelty": 0.5}
    info = {"uri": "models:/dogbreeds@champion", "version": "1"}
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        log_answer(log, photo, answer, info)
        seconds.append(time.perf_counter() - start)
    log.close()
    return {"bytes": len(photo), **percentiles(seconds)}


def contention(folder: Path, photo: bytes, threads: int, per_thread: int) -> dict:
    from dogbreeds.serving.predlog import PredictionLog

    log = PredictionLog(folder / "contention.sqlite", retention_days=90)
    answer = {"status": "ok", "breed": "papillon", "probability": 0.9, "novelty": None}
    info = {"uri": "models:/dogbreeds@champion", "version": "1"}

    def one(_: int) -> float:
        start = time.perf_counter()
        log_answer(log, photo, answer, info)
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        seconds = list(pool.map(one, range(threads * per_thread)))
    wall = time.perf_counter() - start
    commits = log.stats()["commits"]
    log.close()
    return {"threads": threads, "rows": len(seconds), "commits": commits,
            "rows_per_s": round(len(seconds) / wall), **percentiles(seconds)}


def demo_ab(folder: Path, photo: bytes, requests_n: int, clients: int) -> dict:
    import os

    import requests

    from dogbreeds.serving.predlog import PredictionLog
    from dogbreeds.serving.web import create_app
    from support.tiny_registry import build_registry, running_app

    registry = build_registry(folder / "registry")
    os.environ["MLFLOW_TRACKING_URI"] = registry.tracking_uri
    log = PredictionLog(folder / "demo.sqlite", retention_days=90)
    uri = "models:/dogbreeds@champion"
    times: dict[str, list[float]] = {"without": [], "with": []}
    with running_app(create_app(uri, refresh_seconds=None)) as bare, \
            running_app(create_app(uri, refresh_seconds=None, prediction_log=log)) as logged:
        urls = {"without": bare, "with": logged}
        session = requests.Session()

        def call(url: str) -> float:
            start = time.perf_counter()
            reply = session.post(url + "/api/predict", files={"file": ("d.jpg", photo)},
                                 timeout=60)
            reply.raise_for_status()
            return time.perf_counter() - start

        for url in urls.values():  # warm-up
            for _ in range(20):
                call(url)
        block = 25
        for _ in range(requests_n // block):
            for name, url in urls.items():
                times[name] += [call(url) for _ in range(block)]
        # concurrent clients, alternating rounds (the machine's load drifts)
        served = {name: 0.0 for name in urls}
        for _ in range(4):
            for name, url in urls.items():
                def hammer(_: int, url: str = url) -> None:
                    requests.post(url + "/api/predict", files={"file": ("d.jpg", photo)},
                                  timeout=60).raise_for_status()

                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=clients) as pool:
                    list(pool.map(hammer, range(requests_n // 4)))
                served[name] += time.perf_counter() - start
        throughput = {name: round(4 * (requests_n // 4) / seconds, 1)
                      for name, seconds in served.items()}
    rows = log.stats()["rows_written"]
    log.close()
    sequential = {name: percentiles(seconds) for name, seconds in times.items()}
    return {"photo_bytes": len(photo), "sequential": sequential,
            "added_p50_ms": round(sequential["with"]["p50_ms"]
                                  - sequential["without"]["p50_ms"], 2),
            "added_mean_ms": round(sequential["with"]["mean_ms"]
                                   - sequential["without"]["mean_ms"], 2),
            f"requests_per_s_{clients}_clients": throughput,
            "throughput_ratio": ratio(throughput["with"], throughput["without"]),
            "rows_logged": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args(argv)
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="dogbreeds-predlog-") as tmp:
        folder = Path(tmp)
        photos = {"48px": jpeg(48, 48), "500x375": jpeg(500, 375), "12MP": jpeg(4032, 3024)}
        alone = {name: log_alone(folder, photo, args.calls) for name, photo in photos.items()}
        for name, row in alone.items():
            print(f"log_answer {name:8s} ({row['bytes']:>9,} B): p50 {row['p50_ms']} ms, "
                  f"p95 {row['p95_ms']} ms")
        busy = contention(folder, photos["500x375"], threads=16, per_thread=100)
        print(f"16 threads: {busy['rows_per_s']} rows/s in {busy['commits']} commits, "
              f"p50 {busy['p50_ms']} ms, p95 {busy['p95_ms']} ms")
        demo = demo_ab(folder, photos["500x375"], args.requests, clients=8)
        print(f"demo p50 without/with the log: {demo['sequential']['without']['p50_ms']} / "
              f"{demo['sequential']['with']['p50_ms']} ms (+{demo['added_p50_ms']} ms); "
              f"8 clients: {demo['requests_per_s_8_clients']} req/s")
    write_result(NAME, {"log_answer": alone, "contention_16_threads": busy, "demo": demo},
                 load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
