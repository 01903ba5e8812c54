"""The closed loop on the real sample, scripted: serve → predict → correct → retrain → monitor.

Run it in a project folder where ``make repro-sample`` has run (a champion is registered)::

    .venv/bin/python scripts/shelter_loop.py [--port 8010] [--out reports/shelter_loop.json]

1. starts ``dogbreeds serve`` (with its prediction log and feedback folder from params.yaml);
2. sends 40 predictions: real test-split photos of the sample, the same dogs as phones send
   them (sideways + EXIF tag, HEIC, WebP, 12 MP JPEG) and two non-dog photos from
   scikit-image (the cat ``chelsea`` and ``coffee``);
3. sends 6 staff answers through ``POST /api/feedback``: the two non-dog photos marked
   "not a dog", the rest "Correct" or "Wrong → the true breed" (the true breed is known here);
4. stops the server and runs ``dvc repro``: prints which stages ran and which were skipped,
   and the metadata rows whose ``source`` is ``feedback``;
5. shows the registry (``dogbreeds models``) and the judging source of the newest version;
6. runs ``dogbreeds monitor`` on the version that answered and copies its PNG to ``--png``
   (README's picture).

Everything it saw is written to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from PIL import Image

PHONE_SIZE = (4032, 3024)
# The commands of the venv running this script (it need not be activated); main() puts
# them first on PATH, since dvc's stages call plain `python`.
BIN = Path(sys.executable).parent


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dogbreeds serve exited with {proc.returncode}")
        try:
            r = requests.get(url + "/api/health", timeout=2)
            if r.ok and r.json().get("loaded", True):
                return r.json()
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit("dogbreeds serve did not become healthy")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def sideways_jpeg(image: Image.Image) -> bytes:
    """Pixels stored turned 90°, with EXIF orientation 6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95,
                  exif=exif.tobytes())


def stage_table(stage: str):
    """The table a stage of this project wrote (its owner, dogbreeds.data.tables, knows where)."""
    import yaml

    from dogbreeds.data import tables

    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    return tables.read_stage_table(params, Path.cwd(), stage)


def test_photos(per_breed: int) -> list[tuple[str, str, bytes]]:
    """(name, true breed, JPEG bytes) of the first test-split photos of each breed."""
    split = stage_table("split")
    test = split[split["split"] == "test"].sort_values("path")
    chosen = test.groupby("breed", sort=True).head(per_breed)
    return [(Path(p).name, b, Path(p).read_bytes())
            for p, b in zip(chosen["path"], chosen["breed"], strict=True)]


def phone_forms(name: str, breed: str, data: bytes) -> list[tuple[str, str, bytes]]:
    from dogbreeds.data.photos import register_formats

    register_formats()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return [(f"{name}:exif6", breed, sideways_jpeg(image)),
            (f"{name}:heic", breed, encode(image, "HEIF", quality=90)),
            (f"{name}:webp", breed, encode(image, "WEBP", quality=90)),
            (f"{name}:12mp", breed, encode(image.resize(PHONE_SIZE, Image.Resampling.BICUBIC),
                                           "JPEG", quality=92))]


def non_dogs() -> list[tuple[str, str, bytes]]:
    import skimage.data

    return [(f"skimage:{n}", "not_a_dog",
             encode(Image.fromarray(getattr(skimage.data, n)()).convert("RGB"), "JPEG",
                    quality=92))
            for n in ("chelsea", "coffee")]


def predict(url: str, name: str, data: bytes) -> dict:
    r = requests.post(url + "/api/predict", files={"file": (name.replace(":", "_"), data)},
                      timeout=120)
    r.raise_for_status()
    return r.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--out", type=Path, default=Path("reports/shelter_loop.json"))
    parser.add_argument("--png", type=Path, default=Path("docs/monitor.png"))
    args = parser.parse_args(argv)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    url = f"http://127.0.0.1:{args.port}"
    result: dict = {}

    log = open("shelter_loop_serve.log", "w")  # noqa: SIM115 - the server's whole life
    server = subprocess.Popen([str(BIN / "dogbreeds"), "serve", "--port", str(args.port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        result["health"] = wait_healthy(url, server)
        originals = test_photos(per_breed=6)                      # 4 breeds × 6 = 24
        variants = [v for o in originals[::6][:4] for v in phone_forms(*o)]  # 4 × 4 = 16
        photos = originals + variants[:14] + non_dogs()           # 24 + 14 + 2 = 40
        answers = []
        for name, breed, data in photos:
            body = predict(url, name, data)
            answers.append({"photo": name, "true": breed, "body": body})
        result["predictions"] = [
            {"photo": a["photo"], "true": a["true"], "status": a["body"]["answer"]["status"],
             "breed": a["body"]["answer"].get("breed"),
             "probability": a["body"]["answer"].get("probability")} for a in answers]
        right = sum(p["breed"] == p["true"] for p in result["predictions"])
        print(f"40 predictions: {right} right top-1 (non-dogs: "
              f"{[p['status'] for p in result['predictions'][-2:]]})")

        # 6 staff answers: the two non-dogs, then the four least sure dog photos.
        dogs = sorted((a for a in answers if a["true"] != "not_a_dog"),
                      key=lambda a: a["body"]["answer"].get("probability") or 0.0)[:4]
        judged = [a for a in answers if a["true"] == "not_a_dog"] + dogs
        data_of = {name: data for name, _, data in photos}
        result["feedback"] = []
        for a in judged:
            said = a["body"]["answer"].get("breed")
            verdict = "correct" if said == a["true"] else "wrong"
            r = send_feedback(url, a, data_of[a["photo"]], verdict)
            result["feedback"].append({"photo": a["photo"], "label": a["true"],
                                       "verdict": verdict, "status": r.status_code,
                                       "body": r.json()})
        print("feedback:", [(f["photo"], f["verdict"], f["status"]) for f in result["feedback"]])
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=60)
        log.close()

    repro = subprocess.run([str(BIN / "dvc"), "repro"], capture_output=True, text=True)
    out = repro.stdout + repro.stderr
    result["repro"] = {"returncode": repro.returncode,
                       "ran": re.findall(r"Running stage '([^']+)'", out),
                       "skipped": re.findall(r"Stage '([^']+)' didn't change", out)}
    print("dvc repro ran:", result["repro"]["ran"], "skipped:", result["repro"]["skipped"])
    if repro.returncode:
        print(out[-4000:], file=sys.stderr)

    meta = stage_table("build_metadata")
    fb = meta[meta["source"] == "feedback"]
    result["metadata_feedback_rows"] = fb[["path", "breed", "status"]].astype(str).to_dict(
        "records")
    print(f"metadata rows with source=feedback: {len(fb)}")

    models = subprocess.run([str(BIN / "dogbreeds"), "models"], capture_output=True, text=True)
    result["models"] = models.stdout
    print(models.stdout)

    # The version that answered the traffic: the new one may have become champion since.
    answered = result["health"]["model"]
    monitor = subprocess.run([str(BIN / "dogbreeds"), "monitor", "--since", "1d", "--model",
                              f"models:/{answered['name']}/{answered['version']}"],
                             capture_output=True, text=True)
    result["monitor"] = {"returncode": monitor.returncode, "stdout": monitor.stdout,
                         "stderr": monitor.stderr[-2000:]}
    print(monitor.stdout, monitor.stderr[-2000:], f"(exit {monitor.returncode})")
    pngs = sorted(Path("reports/monitor").glob("**/*.png"), key=os.path.getmtime)
    if pngs:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pngs[-1], args.png)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0


def send_feedback(url: str, answer: dict, data: bytes, verdict: str) -> requests.Response:
    """One staff answer for a photo the demo answered (the API of ``POST /api/feedback``)."""
    fields = {"verdict": verdict, "label": answer["true"],
              "answer_id": answer["body"]["answer_id"]}
    return requests.post(url + "/api/feedback", data=fields,
                         files={"file": (answer["photo"].replace(":", "_"), data)}, timeout=60)


if __name__ == "__main__":
    sys.exit(main())
