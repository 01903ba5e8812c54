"""Answers a shelter can trust, measured on real photos: calibration, candidate sets, novelty.

One backbone pass (MobileNetV2, 160 px, the offline weights in ``../shared/weights``) over
every photo of a real dataset split 70/15/15 by the project's stratified split; then, for the
head the pipeline trains on cached features (``train_transfer``'s head settings from
params.yaml), the trust bundle of :mod:`dogbreeds.models.trust` fitted on validation
(``evaluate.trust`` params) and measured on test:

* calibration: test NLL and ECE (15 bins) before / after temperature scaling;
* candidate sets: test coverage vs the target, mean set size, share of single-breed answers;
* novelty (Mahalanobis, flagged above the validation threshold), AUROC against the test
  photos of trained breeds and the share flagged ``unknown``, for
  (a) test photos of the trained breeds,
  (b) held-out breeds: each breed in turn is left out of training (head, temperature,
      conformal, novelty all refitted without it) and all its photos are scored,
  (c) real non-dog photos shipped by scikit-image (``skimage.data``),
  (d) blank images: all-black, all-white, fully transparent PNGs (black and white pixels);
  with the max-softmax score (``1 - top calibrated probability``) as the baseline AUROC.

The non-dog and blank photos go through the assembled model's one-pass
probabilities+features model (:func:`dogbreeds.models.novelty.probabilities_and_features`),
what the registered pyfunc runs; the result records its largest difference from the cached
features.

Note: the offline backbone's last layers were fine-tuned on 19 Stanford Dogs breeds
(``../shared/weights/README.md``), so a "held-out" breed may not be new to the backbone.

With ``--serve`` the sample's model is then logged with its trust bundle (the registered
pyfunc, into a temporary SQLite store) and served by ``mlflow models serve``: the cat
``chelsea``, ``coffee``, ``astronaut``, a black image, a fully transparent PNG and three test
dogs are posted as base64 JSON, and the served answers are recorded.

    python -m benchmarks.trust                      # the 4-breed sample (~2 min)
    python -m benchmarks.trust --serve              # + mlflow models serve (~1 min more)
    python -m benchmarks.trust --dataset dev        # the 25-breed dev set (~4 min)
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    MOBILENET_WEIGHTS,
    ROOT,
    SAMPLE_TAR,
    SCRATCH,
    load,
    timed,
    write_result,
)
from pipeline.common import PARAMS_FILE, load_params

BACKBONE = "mobilenetv2"
DEV_TAR = Path(os.environ.get("DOGBREEDS_DEV_TAR",
                              ROOT.parent / "shared/data/stanford-dogs-dev/images.tar"))
# Real photos in scikit-image's wheel (no download); none shows a dog.
NON_DOG = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "camera", "coins", "moon",
           "page", "clock", "text", "brick", "grass", "gravel", "hubble_deep_field",
           "immunohistochemistry", "retina", "cell", "microaneurysms"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=["sample", "dev"], default="sample")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32, help="images per backbone batch")
    parser.add_argument("--head-batch-size", type=int, default=None,
                        help="feature vectors per head batch (default: params.yaml's)")
    parser.add_argument("--holdout", type=int, default=None, metavar="N",
                        help="hold out only the first N breeds in turn (default: every breed "
                             "of the sample, 5 of the dev set)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--name", default=None, help="results file name (default trust_<dataset>)")
    parser.add_argument("--serve", action="store_true",
                        help="also serve the model with its bundle via `mlflow models serve`")
    return parser.parse_args(argv)


def photos(tar_path: Path, name: str) -> pd.DataFrame:
    """Every JPEG of a Stanford-layout ``images.tar`` (extracted once into SCRATCH):
    ``path`` (absolute), ``breed``, ``origin``."""
    target = SCRATCH / name
    if not (target / ".complete").is_file():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path) as tar:
            tar.extractall(target, filter="data")
        (target / ".complete").write_text("ok")
    rows = [{"path": str(f), "breed": f.parent.name.split("-", 1)[1], "origin": "original"}
            for f in sorted((target / "Images").glob("*/*.jpg"))]
    return pd.DataFrame(rows)


def odd_images() -> dict[str, dict[str, object]]:
    """``{"non_dog": {name: image}, "blank": {name: image}}``: uint8 arrays or PNG bytes."""
    import skimage.data
    from PIL import Image

    non_dog = {}
    for name in NON_DOG:
        image = (skimage.data.stereo_motorcycle()[0] if name == "motorcycle"
                 else getattr(skimage.data, name)())
        non_dog[name] = np.asarray(image, np.uint8)

    def png(rgba: tuple[int, int, int, int]) -> bytes:
        buf = io.BytesIO()
        Image.new("RGBA", (400, 300), rgba).save(buf, format="PNG")
        return buf.getvalue()

    blank = {"black": np.zeros((300, 400, 3), np.uint8),
             "white": np.full((300, 400, 3), 255, np.uint8),
             "transparent_png_black": png((0, 0, 0, 0)),
             "transparent_png_white": png((255, 255, 255, 0))}
    return {"non_dog": non_dog, "blank": blank}


def train_head(features: dict, labels: dict, n_classes: int, cfg: dict, batch: int, seed: int):
    """The pipeline's head (params ``train_transfer``), early-stopped on validation loss."""
    import keras

    from dogbreeds.data.datasets import array_dataset
    from dogbreeds.models.builders import build_head
    from dogbreeds.models.fit import seed_everything

    seed_everything(seed)
    head = build_head(features["train"].shape[1:], n_classes, cfg["dense"], float(cfg["dropout"]),
                      "avg", float(cfg["learning_rate"]))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=True,
                                         patience=int(cfg["early_stopping_patience"]))
    head.fit(array_dataset(features["train"], labels["train"], batch, shuffle=True, seed=seed),
             validation_data=array_dataset(features["val"], labels["val"], batch),
             epochs=int(cfg["epochs"]), callbacks=[stop], verbose=0)
    return head


def novelty_report(bundle, known_probs, known_features, probs, features) -> dict:
    """Share flagged ``unknown`` and AUROC vs the known photos (Mahalanobis and max-softmax)."""
    from dogbreeds.models import calibration, novelty, trust

    answers = trust.answer(bundle, probs, features, top_k=3)
    known_scores = bundle.novelty.scores(known_features)
    scores = bundle.novelty.scores(features)
    top = lambda p: 1.0 - calibration.scale_temperature(p, bundle.temperature).max(axis=1)  # noqa: E731
    return {"n": int(len(probs)),
            "flagged_unknown": float((answers["status"] == "unknown").mean()),
            "status_shares": answers["status"].value_counts(normalize=True).round(4).to_dict(),
            "auroc_mahalanobis": novelty.auroc(known_scores, scores),
            "auroc_max_softmax": novelty.auroc(top(known_probs), top(probs))}


def fit_and_measure(features: dict, labels: dict, classes: list[str], params: dict, batch: int,
                    seed: int) -> tuple:
    """Head + trust bundle on the given splits; calibration/set/novelty numbers on test."""
    from dogbreeds import settings
    from dogbreeds.models import calibration, conformal, trust

    cfg = params["train_transfer"]
    trust_settings = settings.from_section(trust.TrustSettings,
                                           settings.section(params, "evaluate.trust"),
                                           "evaluate.trust")
    with timed() as t_head:
        head = train_head(features, labels, len(classes), cfg, batch, seed)
    probs = {s: head.predict(features[s], verbose=0, batch_size=256) for s in features}
    with timed() as t_fit:
        bundle = trust.fit_trust(classes, trust_settings, train_features=features["train"],
                                 train_labels=labels["train"], val_probs=probs["val"],
                                 val_features=features["val"], val_labels=labels["val"])
    result = {"head_seconds": round(t_head["seconds"], 2),
              "trust_fit_seconds": round(t_fit["seconds"], 3),
              "temperature": round(bundle.temperature, 4),
              "conformal_threshold": bundle.conformal_threshold,
              "novelty_threshold": round(bundle.novelty_threshold, 2)}
    for split in ("val", "test"):
        calibrated = calibration.scale_temperature(probs[split], bundle.temperature)
        result[split] = {
            "accuracy": float((probs[split].argmax(axis=1) == labels[split]).mean()),
            **calibration.calibration_metrics(labels[split], probs[split], bundle.temperature,
                                              trust_settings.ece_bins),
            **conformal.set_metrics(calibrated, labels[split], bundle.conformal_threshold,
                                    bundle.coverage)}
    answers = trust.answer(bundle, probs["test"], features["test"], top_k=3)
    result["test"]["flagged_unknown"] = float((answers["status"] == "unknown").mean())
    shares = answers["status"].value_counts(normalize=True).round(4)
    result["test"]["status_shares"] = shares.to_dict()
    return head, bundle, probs, result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = load()
    from dogbreeds.data.datasets import class_names
    from dogbreeds.data.preprocess import prepare_batch
    from dogbreeds.data.split import stratified_assignment
    from dogbreeds.models import calibration, novelty, trust
    from dogbreeds.models import features as feature_cache
    from dogbreeds.models.builders import build_transfer_model

    params = load_params(ROOT / PARAMS_FILE)
    tar_path, name = (SAMPLE_TAR, "sample") if args.dataset == "sample" else (DEV_TAR, "dev")
    df = photos(tar_path, name)
    df["split"] = stratified_assignment(df["path"], df["breed"], params["split"]["val_fraction"],
                                        params["split"]["test_fraction"], args.seed)
    classes = class_names(df)
    weights = str(MOBILENET_WEIGHTS)
    batch = args.head_batch_size or int(params["train_transfer"]["head_batch_size"])
    print(f"trust: {len(df)} photos of {len(classes)} breeds ({args.dataset}), "
          f"{df['split'].value_counts().to_dict()}, {BACKBONE} @ {args.image_size}px")

    with timed() as t_pass:
        by_split, index, meta, extractor = feature_cache.compute_feature_cache(
            df, classes, BACKBONE, weights, args.image_size, "avg", args.batch_size, Path("/"))
    labels = {s: index.loc[index["split"] == s, "label"].to_numpy() for s in by_split}
    feats = {s: np.asarray(v, np.float32) for s, v in by_split.items()}
    print(f"  backbone pass {t_pass['seconds']:.1f} s")

    # All breeds trained: calibration, sets, novelty of known test dogs.
    head, bundle, probs, result_all = fit_and_measure(feats, labels, classes, params, batch,
                                                      args.seed)
    t = result_all["test"]
    print(f"  all {len(classes)} breeds: test accuracy {t['accuracy']:.3f}; T = "
          f"{bundle.temperature:.3f}; test ECE {t['ece']:.4f} -> {t['ece_calibrated']:.4f}, "
          f"NLL {t['nll']:.4f} -> {t['nll_calibrated']:.4f}; coverage {t['coverage']:.3f} "
          f"(LAC alone {t['lac_coverage']:.3f}, target {bundle.coverage}), mean set size "
          f"{t['mean_set_size']:.2f}; test dogs flagged unknown {t['flagged_unknown']:.3f}")

    # Non-dog and blank photos through the one-pass model the pyfunc uses.
    model = build_transfer_model(BACKBONE, weights, args.image_size, head)
    both = novelty.probabilities_and_features(model)
    odd = odd_images()
    odd_result, odd_answers = {}, {}
    for group, images in odd.items():
        batch_images = prepare_batch(list(images.values()), args.image_size)
        group_probs, group_features = both.predict(batch_images, verbose=0)
        cached_path = extractor.predict(batch_images, verbose=0)
        odd_result[group] = novelty_report(bundle, probs["test"], feats["test"], group_probs,
                                           group_features)
        odd_result[group]["max_abs_diff_vs_feature_cache_path"] = float(
            np.abs(cached_path - group_features).max())
        answers = trust.answer(bundle, group_probs, group_features, top_k=3)
        odd_answers[group] = {
            n: {"status": a["status"], "novelty": round(a["novelty"], 3),
                "top": a["top_k"][0]["breed"], "probability": round(a["probability"], 3),
                "uncalibrated": round(float(p.max()), 3)}
            for n, a, p in zip(images, answers.to_dict("records"), group_probs, strict=True)}
        print(f"  {group}: flagged unknown {odd_result[group]['flagged_unknown']:.3f}, AUROC "
              f"mahalanobis {odd_result[group]['auroc_mahalanobis']:.3f} vs max-softmax "
              f"{odd_result[group]['auroc_max_softmax']:.3f}")
        for n, a in odd_answers[group].items():
            print(f"    {n:22s} {a['status']:8s} novelty {a['novelty']:9.2f}  top {a['top']} "
                  f"{a['probability']:.2f} (uncalibrated {a['uncalibrated']:.2f})")

    # Held-out breeds: everything refitted without one breed, its photos scored.
    holdout_names = classes[: args.holdout or (len(classes) if len(classes) <= 5 else 5)]
    held_out = {}
    for breed in holdout_names:
        gone = classes.index(breed)
        kept = [c for c in classes if c != breed]
        keep = {s: labels[s] != gone for s in labels}
        sub_feats = {s: feats[s][keep[s]] for s in feats}
        # Labels renumbered 0..K-2 in the order of the kept classes.
        sub_labels = {s: labels[s][keep[s]] - (labels[s][keep[s]] > gone) for s in labels}
        sub_head, sub_bundle, sub_probs, sub_result = fit_and_measure(
            sub_feats, sub_labels, kept, params, batch, args.seed)
        novel_feats = np.concatenate([feats[s][~keep[s]] for s in feats])
        novel_probs = sub_head.predict(novel_feats, verbose=0, batch_size=256)
        report = novelty_report(sub_bundle, sub_probs["test"], sub_feats["test"], novel_probs,
                                novel_feats)
        held_out[breed] = {"trained_test_flagged_unknown": sub_result["test"]["flagged_unknown"],
                           "trained_test_accuracy": sub_result["test"]["accuracy"],
                           "trained_test_coverage": sub_result["test"]["coverage"],
                           "held_out": report}
        print(f"  held out {breed}: {report['n']} photos flagged unknown "
              f"{report['flagged_unknown']:.3f} (trained-breed test dogs "
              f"{sub_result['test']['flagged_unknown']:.3f}), statuses "
              f"{report['status_shares']}; AUROC mahalanobis {report['auroc_mahalanobis']:.3f} "
              f"vs max-softmax {report['auroc_max_softmax']:.3f}")
    mean = lambda key: float(np.mean([h["held_out"][key] for h in held_out.values()]))  # noqa: E731
    summary = {"mean_auroc_mahalanobis": mean("auroc_mahalanobis"),
               "mean_auroc_max_softmax": mean("auroc_max_softmax"),
               "mean_flagged_unknown": mean("flagged_unknown"),
               "mean_trained_test_flagged_unknown": float(np.mean(
                   [h["trained_test_flagged_unknown"] for h in held_out.values()]))}
    print(f"  held-out breeds, mean over {len(held_out)}: {summary}")

    calibrated = calibration.scale_temperature(probs["test"], bundle.temperature)
    figure = calibration.reliability_diagram(
        labels["test"], [("before", probs["test"]), ("after", calibrated)],
        title=f"{BACKBONE} head, {args.dataset} test split")
    name = args.name or f"trust_{args.dataset}"
    figure.savefig(ROOT / "benchmarks" / "results" / f"{name}_reliability.png", dpi=80)
    result = {"inputs": {"dataset": args.dataset, "n_photos": len(df), "classes": classes,
                         "splits": df["split"].value_counts().to_dict(), "backbone": BACKBONE,
                         "image_size": args.image_size, "weights": Path(weights).name,
                         "head_batch_size": batch, "seed": args.seed},
              "backbone_pass_seconds": round(t_pass["seconds"], 2),
              "all_breeds": result_all, "odd": odd_result, "odd_answers": odd_answers,
              "held_out": held_out, "held_out_summary": summary}
    if args.serve:
        result["served"] = served_answers(model, bundle, classes, args.image_size, odd,
                                          df[df["split"] == "test"]["path"].head(3).tolist())
    write_result(name, result, load_before)
    return result


def served_answers(model, bundle, classes: list[str], image_size: int, odd: dict,
                   dog_paths: list[str]) -> dict:
    """Log ``model`` + ``bundle`` as the pyfunc in a temporary store, serve it with
    ``mlflow models serve`` and post photos to it; the answers by photo name."""
    import base64
    import json
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    import mlflow
    from PIL import Image

    from dogbreeds.serving import pyfunc
    from dogbreeds.tracking import store

    def encoded(image) -> bytes:
        if isinstance(image, bytes):
            return image
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    photos = {n: encoded(odd["non_dog"][n]) for n in ("chelsea", "coffee", "astronaut")}
    photos.update({n: encoded(odd["blank"][n]) for n in ("black", "transparent_png_black")})
    photos.update({f"test_dog_{Path(p).parent.name.split('-', 1)[1]}_{i}": Path(p).read_bytes()
                   for i, p in enumerate(dog_paths)})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model.save(root / "model.keras")
        bundle.save(root / "trust")
        store.configure(root, "trust-serve")
        with mlflow.start_run():
            uri = pyfunc.log_classifier(root / "model.keras", classes, image_size,
                                        trust_dir=root / "trust").model_uri
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The venv's bin on PATH: mlflow starts the scoring server as a bare `uvicorn`.
        env = {**os.environ, "MLFLOW_TRACKING_URI": store.local_tracking_uri(root),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        log_path = SCRATCH / "trust_serve.log"
        log = open(log_path, "w")  # noqa: SIM115 (closed in finally)
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", uri,
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("mlflow models serve did not start:\n"
                                           + log_path.read_text()[-3000:]) from None
                    time.sleep(1)
            body = {"dataframe_split": {"columns": ["image"], "data": [
                [base64.b64encode(data).decode()] for data in photos.values()]},
                    "params": {"top_k": 3}}
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                             json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                answers = json.loads(response.read())["predictions"]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            log.close()
    served = {name: {k: a[k] for k in ("status", "breed", "probability", "candidates",
                                       "novelty")}
              for name, a in zip(photos, answers, strict=True)}
    print("  served by mlflow models serve:")
    for name, a in served.items():
        print(f"    {name:32s} {a['status']:8s} novelty {a['novelty']:8.2f}  breed {a['breed']} "
              f"candidates {a['candidates']}")
    return served


if __name__ == "__main__":
    main()
