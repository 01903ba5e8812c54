"""Serving: what a photo costs through every path, next to the model's own forward pass.

One run, every figure side by side (the machine is shared: ratios, not absolute numbers, are
what carry over). The model is the real thing: MobileNetV2 at 160 px with the offline ImageNet
weights (``../shared/weights``) and a softmax head trained briefly on the real 4-breed sample
(``tests/support/sample_model.py``, the model the phone-photo tests use), registered as
``dogbreeds`` v1 in a temporary SQLite store.

- **floor**: the bare Keras model's compiled forward pass (``tf.function``), 1 photo and a
  batch of 32; **decode**: :func:`dogbreeds.data.preprocess.load_bytes` of the photo;
- **single photo p50/p95** (one request at a time): floor, pyfunc (``predict_images``), the web
  demo (``dogbreeds serve``, a subprocess), the exported runtime (when the registered version
  carries one) and ``mlflow models serve`` (a subprocess, JSON base64);
- **throughput** with 1, 8 and 32 concurrent clients: web demo vs ``mlflow models serve`` vs
  the batch-32 floor;
- **12 MP vs 500×375**: the same photo upscaled to 4032×3024 (JPEG q92) through the demo;
- ``--load-test``: 2,000 requests from 32 clients to the demo, one in ten a bad upload:
  statuses, every bad one a 4xx with a message, the server's resident memory before and after.

All traffic goes to 127.0.0.1; request counts are bounded by the flags.

Targets (issue 13): demo p50 ≤ 1.5× (floor + decode); demo at 32 clients ≥ 0.7× the batch-32
floor and ≥ 3× ``mlflow models serve``; 12 MP ≤ 1.3× 500×375.

    python -m benchmarks.serving [--calls 30] [--requests-per-client 30] [--load-test]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, load, ratio, write_result
from benchmarks.inference import free_port, percentiles, run_threads

NAME = "serving"
CLIENTS = (1, 8, 32)
BAD_UPLOADS = (b"", b"hello, this is not a photo", b"\xff\xd8\xff\xe0" + b"\x00" * 300,
               b"GIF89a" + b"\x01" * 20)

sys.path.insert(0, str(ROOT / "tests"))  # the sample model the phone-photo tests use


def timed_calls(call: Callable[[], object], calls: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return percentiles(seconds)


# ----- servers (subprocesses on 127.0.0.1) ------------------------------------------------------

class Server:
    """A server subprocess; :meth:`wait` polls ``health_path`` until it answers 200."""

    def __init__(self, cmd: list[str], port: int, cwd: Path, env: dict, health_path: str) -> None:
        self.port = port
        self.health_path = health_path
        self.log = open(cwd / f"server-{port}.log", "w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"server exited: {self.log.read()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", self.health_path)
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server on port {self.port} did not start in {timeout} s")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def demo_server(store: Path, uri: str, settings: dict, runtime: str | None = None) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "dogbreeds.cli", "serve", "--model", uri, "--port", str(port),
           "--max-batch-size", str(settings["max_batch_size"]),
           "--max-wait-ms", str(settings["max_wait_ms"])]
    if runtime:
        cmd += ["--runtime", runtime]
    return Server(cmd, port, store, server_env(store), "/api/health")


def mlflow_server(store: Path, uri: str) -> Server:
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", uri,
           "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    return Server(cmd, port, store, server_env(store), "/ping")


def server_env(store: Path) -> dict:
    # The venv's bin first: `mlflow models serve` runs `uvicorn` from PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": "2",
            "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}


# ----- clients ---------------------------------------------------------------------------------

Request = tuple[str, str, bytes, dict]  # method, path, body, headers


def demo_request(photo: bytes) -> Request:
    return ("POST", "/api/predict?top_k=5", photo, {"Content-Type": "application/octet-stream"})


def mlflow_request(photo: bytes) -> Request:
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(photo).decode("ascii")]]}, "params": {"top_k": 5}}).encode()
    return ("POST", "/invocations", body, {"Content-Type": "application/json"})


def send(conn: http.client.HTTPConnection, request: Request) -> tuple[int, bytes]:
    method, path, body, headers = request
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def single(port: int, request: Request, calls: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call() -> None:
        status, body = send(conn, request)
        if status != 200:
            raise RuntimeError(f"status {status}: {body[:300]!r}")

    return timed_calls(call, calls)


def hammer(port: int, requests: list[Request], clients: int) -> dict:
    """``clients`` keep-alive connections send ``requests`` (shared queue) as fast as answered."""
    queue = iter(enumerate(requests))
    lock = threading.Lock()
    results: list[tuple[int, int, float, bytes]] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        while True:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            index, request = job
            start = time.perf_counter()
            try:
                status, body = send(conn, request)
            except (OSError, http.client.HTTPException) as exc:
                status, body = 0, repr(exc).encode()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            with lock:
                results.append((index, status, time.perf_counter() - start, body))

    wall = run_threads(client, clients)
    statuses: dict[int, int] = {}
    for _, status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {"clients": clients, "requests": len(requests), "seconds": round(wall, 2),
            "photos_per_second": round(len(requests) / wall, 2), "statuses": statuses,
            "latency": percentiles([r[2] for r in results]), "_results": sorted(results)}


def throughput(port: int, request: Request, per_client: int) -> dict:
    """Photos/s with each number of clients, after one warm-up round at the most clients
    (first batches of each size, thread pools, connections: a few hundred requests measured
    from cold read as 60-100 photos/s one run and 110 the next)."""
    hammer(port, [request] * (2 * max(CLIENTS)), max(CLIENTS))
    out = {}
    for clients in CLIENTS:
        run = hammer(port, [request] * (clients * per_client), clients)
        run.pop("_results")
        out[str(clients)] = run
    return out


def load_test(server: Server, photo: bytes, requests: int, clients: int) -> dict:
    """``requests`` uploads from ``clients``, every tenth a bad one; statuses and memory."""
    jobs = [demo_request(BAD_UPLOADS[(i // 10) % len(BAD_UPLOADS)] if i % 10 == 9 else photo)
            for i in range(requests)]
    # Resident memory after each quarter: growth that stops is warm-up (allocator arenas,
    # batch shapes); growth that goes on is a leak.
    rss = [server.rss_mib()]
    runs = []
    quarter = -(-requests // 4)
    for start in range(0, requests, quarter):
        runs.append(hammer(server.port, jobs[start:start + quarter], clients))
        rss.append(server.rss_mib())
    run = merge_runs(runs, offsets=range(0, requests, quarter))
    rss_start, rss_end = rss[0], rss[-1]
    bad_answers = [(status, body) for index, status, _, body in run.pop("_results")
                   if index % 10 == 9]
    with_message = sum(1 for status, body in bad_answers
                       if 400 <= status < 500 and json.loads(body or b"{}").get("error"))
    server_errors = sum(n for status, n in run["statuses"].items() if status >= 500 or status == 0)
    return {**run, "bad_uploads": len(bad_answers), "bad_uploads_4xx_with_message": with_message,
            "server_errors": server_errors, "rss_mib_start": rss_start, "rss_mib_end": rss_end,
            "rss_mib_each_quarter": rss}


def merge_runs(runs: list[dict], offsets) -> dict:
    """One summary of consecutive :func:`hammer` runs (their request indexes shifted)."""
    results = [(index + offset, *rest) for run, offset in zip(runs, offsets, strict=True)
               for index, *rest in run["_results"]]
    statuses: dict[int, int] = {}
    for run in runs:
        for status, n in run["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    seconds = sum(run["seconds"] for run in runs)
    return {"clients": runs[0]["clients"], "requests": len(results), "seconds": round(seconds, 2),
            "photos_per_second": round(len(results) / seconds, 2), "statuses": statuses,
            "latency": percentiles([r[2] for r in results]), "_results": results}


# ----- the run -----------------------------------------------------------------------------------

def phone_jpeg(photo_path: Path) -> bytes:
    from PIL import Image

    from support.phone_photos import PHONE_SIZE, encode

    with Image.open(photo_path) as image:
        return encode(image.convert("RGB").resize(PHONE_SIZE, Image.Resampling.BICUBIC), "JPEG",
                      quality=92)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="single-photo calls per path")
    parser.add_argument("--requests-per-client", type=int, default=30)
    parser.add_argument("--load-test", action="store_true",
                        help="also 2,000 requests from 32 clients, one in ten a bad upload")
    parser.add_argument("--load-requests", type=int, default=2000)
    parser.add_argument("--no-mlflow-serve", action="store_true")
    args = parser.parse_args(argv)
    load_before = load()
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    import yaml

    from support import sample_model

    reason = sample_model.available()
    if reason:
        raise SystemExit(f"{NAME}: {reason}")
    settings = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    result: dict = {"serve_settings": settings}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        registry = sample_model.build_registry(Path(tmp))
        store, uri = registry.root, f"models:/{sample_model.MODEL_NAME}/1"
        photo_path = registry.held_out[registry.classes[0]][0]
        photo = photo_path.read_bytes()
        big = phone_jpeg(photo_path)
        result["inputs"] = {"photo": photo_path.name, "photo_bytes": len(photo),
                            "phone_jpeg_bytes": len(big), "calls": args.calls,
                            "requests_per_client": args.requests_per_client}
        print(f"{NAME}: {photo_path.name} ({len(photo)} B) and its 4032x3024 JPEG "
              f"({len(big)} B); {args.calls} calls per single-photo path")
        result.update(in_process(registry, uri, photo, big, args.calls))
        result.update(over_http(store, uri, photo, big, settings, args,
                                with_runtime="runtime" in result))
    result["targets"] = targets(result)
    report(result)
    write_result(NAME, result, load_before)
    return result


def in_process(registry, uri: str, photo: bytes, big: bytes, calls: int) -> dict:
    import keras

    from dogbreeds.data.preprocess import load_bytes
    from dogbreeds.serving import pyfunc
    from dogbreeds.serving.forward import compiled_call

    model = keras.models.load_model(registry.keras_file, compile=False)
    forward = compiled_call(model, 160)
    one = load_bytes(photo, 160)[None]
    batch = np.repeat(one, 32, axis=0)
    floor_1 = timed_calls(lambda: forward(one), calls)
    floor_32 = timed_calls(lambda: forward(batch), max(5, calls // 3))
    floor_32["photos_per_second"] = ratio(32 * 1000, floor_32["p50_ms"])
    predict_1 = timed_calls(lambda: model.predict(one, verbose=0), max(5, calls // 3))
    decode = timed_calls(lambda: load_bytes(photo, 160), calls)
    decode_big = timed_calls(lambda: load_bytes(big, 160), max(5, calls // 3))
    os.environ["MLFLOW_TRACKING_URI"] = registry.tracking_uri
    classifier = pyfunc.load_classifier(uri)
    pyfunc_1 = timed_calls(lambda: pyfunc.predict_images(classifier, [photo]), calls)
    out = {"floor_1": floor_1, "floor_32": floor_32, "keras_predict_1": predict_1,
           "decode": decode, "decode_12mp": decode_big, "pyfunc": pyfunc_1}
    runtime = exported_runtime(registry, uri)
    if runtime is not None:
        out["runtime"] = {"kind": runtime.kind, **timed_calls(
            lambda: runtime.probabilities(runtime.preprocess([photo])), calls)}
    return out


def exported_runtime(registry, uri: str):
    """The registered version's exported runtime, exported here if it has none (or None when
    this checkout has no exporter)."""
    try:
        from dogbreeds.serving import runtimes
    except ImportError:
        return None
    runtimes.export_registered(uri)
    return runtimes.load_runtime(uri)


def over_http(store: Path, uri: str, photo: bytes, big: bytes, settings: dict, args,
              with_runtime: bool) -> dict:
    out: dict = {}
    demo = demo_server(store, uri, settings).wait()
    try:
        out["demo"] = single(demo.port, demo_request(photo), args.calls)
        out["demo_12mp"] = single(demo.port, demo_request(big), args.calls)
        out["demo_throughput"] = throughput(demo.port, demo_request(photo),
                                            args.requests_per_client)
        health = json.loads(send(http.client.HTTPConnection("127.0.0.1", demo.port),
                                 ("GET", "/api/health", b"", {}))[1])
        out["demo_batching"] = health["batching"]
        if args.load_test:
            out["load_test"] = load_test(demo, photo, args.load_requests, 32)
    finally:
        demo.stop()
    if with_runtime:
        rt = demo_server(store, uri, settings, runtime="litert").wait()
        try:
            out["demo_runtime"] = single(rt.port, demo_request(photo), args.calls)
            out["demo_runtime_throughput"] = throughput(rt.port, demo_request(photo),
                                                        args.requests_per_client)
        finally:
            rt.stop()
    if not args.no_mlflow_serve:
        served = mlflow_server(store, uri).wait()
        try:
            out["mlflow_serve"] = single(served.port, mlflow_request(photo), args.calls)
            out["mlflow_serve_throughput"] = throughput(served.port, mlflow_request(photo),
                                                        args.requests_per_client)
        finally:
            served.stop()
    return out


def targets(r: dict) -> dict:
    floor_decode = r["floor_1"]["p50_ms"] + r["decode"]["p50_ms"]
    demo32 = r["demo_throughput"]["32"]["photos_per_second"]
    out = {
        "demo_p50_over_floor_plus_decode": ratio(r["demo"]["p50_ms"], floor_decode),
        "demo_32_clients_over_floor_32": ratio(demo32, r["floor_32"]["photos_per_second"]),
        "demo_12mp_over_500x375": ratio(r["demo_12mp"]["p50_ms"], r["demo"]["p50_ms"]),
        "pyfunc_p50_over_floor_plus_decode": ratio(r["pyfunc"]["p50_ms"], floor_decode),
    }
    runtime32 = r.get("demo_runtime_throughput", {}).get("32", {}).get("photos_per_second")
    if runtime32:
        out["demo_runtime_32_clients_over_floor_32"] = ratio(
            runtime32, r["floor_32"]["photos_per_second"])
    if "mlflow_serve_throughput" in r:
        mlflow32 = r["mlflow_serve_throughput"]["32"]["photos_per_second"]
        out["demo_32_clients_over_mlflow_serve_32"] = ratio(demo32, mlflow32)
        if runtime32:
            out["demo_runtime_32_clients_over_mlflow_serve_32"] = ratio(runtime32, mlflow32)
    return out


def report(r: dict) -> None:
    rows = [("floor, 1 photo (compiled call)", r["floor_1"]),
            ("keras model.predict, 1 photo", r["keras_predict_1"]),
            ("decode 500x375 JPEG", r["decode"]), ("decode 4032x3024 JPEG", r["decode_12mp"]),
            ("pyfunc", r["pyfunc"]), ("web demo", r["demo"]),
            ("web demo, 12 MP JPEG", r["demo_12mp"])]
    rows += [(f"exported runtime ({r['runtime']['kind']})", r["runtime"])] if "runtime" in r else []
    rows += [("web demo --runtime", r["demo_runtime"])] if "demo_runtime" in r else []
    rows += [("mlflow models serve", r["mlflow_serve"])] if "mlflow_serve" in r else []
    print("  single photo                        p50 ms   p95 ms")
    for label, stats in rows:
        print(f"  {label:34s} {stats['p50_ms']:7.1f}  {stats['p95_ms']:7.1f}")
    print(f"  floor, batch of 32: {r['floor_32']['p50_ms']:.1f} ms = "
          f"{r['floor_32']['photos_per_second']:.1f} photos/s")
    print("  throughput (photos/s)   " + "  ".join(f"{c:>3} clients" for c in CLIENTS))
    for label, key in (("web demo", "demo_throughput"),
                       ("web demo --runtime", "demo_runtime_throughput"),
                       ("mlflow models serve", "mlflow_serve_throughput")):
        if key in r:
            print(f"  {label:22s}" + "".join(f"{r[key][str(c)]['photos_per_second']:12.1f}"
                                            for c in CLIENTS))
    print(f"  demo batching: {r['demo_batching']}")
    if "load_test" in r:
        lt = r["load_test"]
        print(f"  load test: {lt['requests']} requests, {lt['clients']} clients, statuses "
              f"{lt['statuses']}, server errors {lt['server_errors']}, bad uploads "
              f"{lt['bad_uploads_4xx_with_message']}/{lt['bad_uploads']} got a 4xx with a "
              f"message, RSS {lt['rss_mib_start']} → {lt['rss_mib_end']} MiB (after each "
              f"quarter: {lt['rss_mib_each_quarter']})")
    for name, value in r["targets"].items():
        print(f"  {name}: {value:.2f}x")


if __name__ == "__main__":
    main()
