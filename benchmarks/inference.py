"""Inference: single-photo latency through the registered pyfunc per backbone; web demo req/s.

For every backbone of :data:`dogbreeds.models.backbones.BACKBONES` (at its default input size,
``weights=None``: latency does not depend on the weights' values) a transfer model with a
4-class head is saved, logged with :func:`dogbreeds.serving.pyfunc.log_classifier` and
registered in a temporary SQLite MLflow store, loaded back from ``models:/<name>/1`` and asked
for one real JPEG photo at a time (encoded bytes in, ranked breeds out: decode + resize + model +
ranking). p50/p95 over ``--calls`` calls after a warm-up.

Then the web demo (:mod:`dogbreeds.serving.web`, uvicorn, in a subprocess) serves the
``--web-backbone`` model on 127.0.0.1 and ``--clients`` threads POST the photo to
``/api/predict`` until ``--requests`` requests are done: requests/s and latency under load.
The server runs one prediction at a time (by design), so the ratio to the pyfunc's 1/p50 shows
what the HTTP layer costs.

    python -m benchmarks.inference [--backbones mobilenetv2 efficientnetv2b0] [--calls 30]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load, ratio, sample_images, write_result

NAME = "inference"


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "mean_ms": round(float(ms.mean()), 1), "n": len(seconds)}


def photo_bytes() -> tuple[bytes, str]:
    df = sample_images(1)
    if df is not None:
        path = Path(df["path"].iloc[0])
        return path.read_bytes(), path.name
    import cv2

    from benchmarks.common import synthetic_image

    ok, buf = cv2.imencode(".jpg", synthetic_image(0, np.random.default_rng(0), 500, 375))
    return buf.tobytes(), "synthetic 500x375 JPEG"


def log_backbone(name: str, tmp: Path, classes: list[str]) -> tuple[str, int, float]:
    """Save + log + register a weights-none transfer model; return (uri, size, seconds)."""
    import keras

    from dogbreeds.models.backbones import build_backbone, image_size_for
    from dogbreeds.models.builders import build_head, build_transfer_model
    from dogbreeds.serving.pyfunc import log_classifier

    size = image_size_for(name, None)
    channels = int(build_backbone(name, None, size, pooling="avg").output.shape[-1])
    keras.utils.set_random_seed(0)
    head = build_head((channels,), len(classes), [256], 0.3, "avg", 1e-3)
    model = build_transfer_model(name, None, size, head)
    path = tmp / name / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    start = time.perf_counter()
    log_classifier(path, classes, size, name=name, registered_model_name=f"bench_{name}")
    return f"models:/bench_{name}/1", size, time.perf_counter() - start


def pyfunc_latency(uri: str, photo: bytes, calls: int, warmup: int = 3) -> dict:
    from dogbreeds.serving.pyfunc import load_classifier, predict_images

    start = time.perf_counter()
    model = load_classifier(uri)
    load_seconds = time.perf_counter() - start
    for _ in range(warmup):
        predict_images(model, [photo], top_k=5)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        predict_images(model, [photo], top_k=5)
        times.append(time.perf_counter() - start)
    return {"load_seconds": round(load_seconds, 2), **percentiles(times)}


def run_threads(target, count: int) -> float:
    """Run ``target`` in ``count`` threads at once; the wall-clock seconds until all end."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_throughput(uri: str, store: Path, photo: bytes, clients: int, requests: int) -> dict:
    """Serve ``uri`` with ``dogbreeds.serving.web.serve`` in a subprocess; hammer it from
    threads."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from dogbreeds.serving.web import serve; "
         "serve(sys.argv[1], port=int(sys.argv[2]), refresh_seconds=None)", uri, str(port)],
        cwd=store, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"web server exited: {server.stdout.read()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("web server did not start within 180 s")
            time.sleep(0.5)

        def post(conn: http.client.HTTPConnection) -> int:
            conn.request("POST", "/api/predict?top_k=5", body=photo,
                         headers={"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            return response.status

        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(3):
            post(warm)
        counter = iter(range(requests))
        lock = threading.Lock()
        latencies: list[float] = []
        statuses: dict[int, int] = {}

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                start = time.perf_counter()
                status = post(conn)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1

        wall = run_threads(client, clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"clients": clients, "requests": requests, "seconds": round(wall, 2),
            "requests_per_second": round(requests / wall, 2), "statuses": statuses,
            "latency": percentiles(latencies)}


def main(argv: list[str] | None = None) -> dict:
    from dogbreeds.models.backbones import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--web-backbone", default="mobilenetv2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    load_before = load()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from dogbreeds.tracking import store

    photo, photo_name = photo_bytes()
    classes = ["Maltese_dog", "German_shepherd", "Saint_Bernard", "golden_retriever"]
    print(f"{NAME}: one photo ({photo_name}, {len(photo)} bytes) per call, {args.calls} calls "
          f"after 3 warm-ups; weights none")
    per_backbone = {}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp = Path(tmp)
        store.configure(tmp, "bench")
        uris = {}
        for name in args.backbones:
            uri, size, log_seconds = log_backbone(name, tmp, classes)
            uris[name] = uri
            stats = pyfunc_latency(uri, photo, args.calls)
            per_backbone[name] = {"image_size": size, "log_seconds": round(log_seconds, 2),
                                  **stats, "photos_per_second": ratio(1000, stats["p50_ms"])}
            print(f"  {name:18s} {size}px  p50 {stats['p50_ms']:7.1f} ms  p95 "
                  f"{stats['p95_ms']:7.1f} ms  (load {stats['load_seconds']:.1f} s, log+register "
                  f"{log_seconds:.1f} s)")
        web = None
        if args.web_backbone in uris and args.requests > 0:
            web = web_throughput(uris[args.web_backbone], tmp, photo, args.clients,
                                 args.requests)
            single = per_backbone[args.web_backbone]["photos_per_second"]
            web["ratio_over_pyfunc_single_photo_rate"] = ratio(web["requests_per_second"], single)
            print(f"  web demo ({args.web_backbone}, {args.clients} clients, {args.requests} "
                  f"requests): {web['requests_per_second']:.1f} requests/s, latency p50 "
                  f"{web['latency']['p50_ms']:.0f} ms p95 {web['latency']['p95_ms']:.0f} ms, "
                  f"statuses {web['statuses']}; {web['ratio_over_pyfunc_single_photo_rate']:.2f}x "
                  f"the pyfunc's 1/p50")
    result = {"inputs": {"photo": photo_name, "photo_bytes": len(photo), "calls": args.calls,
                         "weights": "none", "classes": len(classes)},
              "pyfunc": per_backbone, "web": web}
    write_result(NAME, result, load_before)
    return result


if __name__ == "__main__":
    main()
