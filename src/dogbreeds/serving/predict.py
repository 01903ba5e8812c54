"""``dogbreeds predict``: the likely breeds of photos, from any MLflow model URI.

The registered model (see :mod:`dogbreeds.serving.pyfunc`) takes raw encoded images and does its own
preprocessing, so this module only finds the files, reads their bytes, feeds them in batches
and reports. One bad file never stops a run: it gets its own error line and the exit status
tells a script that something failed (0 all good, 1 some photos failed, 2 usage error).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from dogbreeds.serving.answers import format_table, write_csv

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".heic",
                              ".heif"})
BATCH_SIZE = 32

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ModelLoadError(RuntimeError):
    """The model URI does not resolve to a loadable model."""


ANSWER_KEYS = ("status", "breed", "probability", "candidates", "novelty")


@dataclass
class PhotoResult:
    """The answer for one photo: ``predictions`` (raw labels, descending) and ``answer``
    (the model's ``status``/``breed``/``probability``/``candidates``/``novelty``, see
    :mod:`dogbreeds.serving.pyfunc`), or an ``error``."""

    path: str
    predictions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    answer: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """``ok`` | ``unsure`` | ``unknown`` from the model, or ``error``."""
        return self.answer.get("status", "ok") if self.ok else "error"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status,
                **{k: self.answer.get(k) for k in ANSWER_KEYS[1:]},
                "predictions": self.predictions, "error": self.error}


def collect_photos(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[PhotoResult]]:
    """Expand files and folders into the photos to run, in a stable order.

    Folders are walked recursively and only files with an image extension are taken (sorted);
    a file named explicitly is always tried, whatever its extension, so the model — not the
    name — decides whether it is an image.

    Returns:
        ``(photos, problems)``: problems are missing paths and folders without images.
    """
    photos: list[Path] = []
    problems: list[PhotoResult] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(PhotoResult(str(path), error="no images in this folder"))
            candidates = found
        elif path.exists():
            candidates = [path]
        else:
            problems.append(PhotoResult(str(path), error="no such file or folder"))
            continue
        for photo in candidates:
            key = photo.resolve()
            if key not in seen:
                seen.add(key)
                photos.append(photo)
    return photos, problems


def open_store(model_uri: str) -> str:
    """Point MLflow at the store the CLI uses and return its registry URI.

    That store is ``mlflow.db`` in the current folder (the project root) unless
    ``MLFLOW_TRACKING_URI`` says otherwise. Outside a project there is no such file: say so
    instead of letting MLflow create an empty database there.

    Raises:
        ModelLoadError: a registry URI (``models:/``) while the local store does not exist.
    """
    import mlflow

    from dogbreeds.tracking import store

    cwd = Path.cwd()
    uri = store.use_store(cwd)
    if (model_uri.startswith("models:/") and uri == store.local_tracking_uri(cwd)
            and not (cwd / store.DB_FILE).exists()):
        raise ModelLoadError(
            f"no model at {model_uri}: run `make repro` first (no MLflow store "
            f"{store.DB_FILE} in {cwd}: run from the project folder or set "
            "MLFLOW_TRACKING_URI)")
    return mlflow.get_registry_uri()


def load_model(model_uri: str, runtime: str = "pyfunc"):
    """Load a classifier (``mlflow.pyfunc``) from any MLflow model URI (store: :func:`open_store`),
    or with ``runtime="litert"`` the registered version's exported runtime
    (:mod:`dogbreeds.serving.runtimes`; same inputs, same answers).

    Raises:
        ModelLoadError: with a message that tells the user what to do.
    """
    from dogbreeds.serving.pyfunc import load_classifier

    open_store(model_uri)
    try:
        if runtime != "pyfunc":
            from dogbreeds.serving.runtimes import load_runtime

            return load_runtime(model_uri)
        return load_classifier(model_uri)
    except Exception as exc:  # MlflowException, OSError, …: all mean "no usable model there"
        raise no_model_error(model_uri, exc) from exc


def no_model_error(model_uri: str, exc: BaseException) -> ModelLoadError:
    """What to tell a user when ``model_uri`` (or its alias) leads to no usable model."""
    return ModelLoadError(f"no model at {model_uri}: run `make repro` first, or pass --model "
                          f"URI ({first_line(exc)})")


def read_photo(path: Path) -> bytes:
    """The file's bytes; ``ValueError`` for an empty file (OSError passes through)."""
    data = path.read_bytes()
    if not data:
        raise ValueError("empty file")
    return data


def _rows_to_predictions(frame) -> list[list[dict[str, Any]]]:
    return [[{"breed": str(item["breed"]), "probability": float(item["probability"])}
             for item in top] for top in frame["top_k"]]


def plain_answer(row: dict[str, Any]) -> dict[str, Any]:
    """One answer row → plain JSON values (a model without the newer columns answers ``ok``)."""
    novelty = row.get("novelty")
    return {"status": str(row.get("status") or "ok"),
            "breed": None if row.get("breed") is None else str(row["breed"]),
            "probability": float(row["probability"]),
            "candidates": [str(b) for b in row.get("candidates", [row.get("breed")])],
            "novelty": None if novelty is None or novelty != novelty else float(novelty)}


def answer_photos(model, images: Sequence[bytes], top_k: int
                  ) -> list[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """Run the model on encoded images; per image its descending top-k list and its answer."""
    from dogbreeds.serving.pyfunc import predict_images

    frame = predict_images(model, list(images), top_k)
    return list(zip(_rows_to_predictions(frame),
                    [plain_answer(row) for row in frame.to_dict("records")], strict=True))


def classify(model, images: Sequence[bytes], top_k: int) -> list[list[dict[str, Any]]]:
    """Run the model on encoded images; one descending top-k list per image."""
    return [predictions for predictions, _ in answer_photos(model, images, top_k)]


def first_line(exc: BaseException) -> str:
    """An exception's first line of text (its type name when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def decode_error(exc: BaseException) -> str:
    """The model's decoding error without the image index it adds (meaningless to a user)."""
    return re.sub(r"^image \d+: ", "", first_line(exc))


def _read_error(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a folder"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return first_line(exc)


def predict_photos(model, photos: Sequence[Path], top_k: int, batch_size: int = BATCH_SIZE,
                   progress: bool = False) -> list[PhotoResult]:
    """Predict every photo, batching the readable ones.

    A batch that fails (one undecodable image fails the whole call) is retried photo by
    photo, so each bad photo gets its own error and the good ones still get an answer.
    """
    from tqdm import tqdm

    results = {str(p): PhotoResult(str(p)) for p in photos}
    readable: list[tuple[Path, bytes]] = []
    for photo in photos:
        try:
            readable.append((photo, read_photo(photo)))
        except (OSError, ValueError) as exc:
            results[str(photo)].error = _read_error(exc)

    with tqdm(total=len(readable), unit="photo", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(readable), batch_size):
            batch = readable[start:start + batch_size]
            try:
                answers = answer_photos(model, [data for _, data in batch], top_k)
                for (photo, _), (preds, answer) in zip(batch, answers, strict=True):
                    results[str(photo)].predictions = preds
                    results[str(photo)].answer = answer
            except Exception:
                for photo, data in batch:
                    try:
                        ((results[str(photo)].predictions,
                          results[str(photo)].answer),) = answer_photos(model, [data], top_k)
                    except Exception as exc:  # the model raises ValueError; stay robust
                        results[str(photo)].error = f"not a readable image: {decode_error(exc)}"
            bar.update(len(batch))
    return [results[str(p)] for p in photos]


def run_predict(paths: Sequence[str], model_uri: str, top_k: int = 3, as_json: bool = False,
                csv_path: str | None = None, *, stdout: TextIO | None = None,
                stderr: TextIO | None = None, runtime: str = "pyfunc") -> int:
    """The ``dogbreeds predict`` command; returns the exit status (0, 1 or 2)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if top_k < 1:
        print("dogbreeds predict: --top-k must be at least 1", file=stderr)
        return EXIT_USAGE
    if csv_path and not Path(csv_path).parent.is_dir():
        print(f"dogbreeds predict: --csv {csv_path}: its folder does not exist", file=stderr)
        return EXIT_USAGE
    # The model first: a wrong --model is a usage error whatever the photos are.
    try:
        model = load_model(model_uri, runtime)
    except ModelLoadError as exc:
        print(f"dogbreeds predict: {exc}", file=stderr)
        return EXIT_USAGE
    photos, problems = collect_photos(paths)
    show_progress = len(photos) > BATCH_SIZE and stderr.isatty()
    results = predict_photos(model, photos, top_k, progress=show_progress)
    results = problems + results  # missing paths first: they are the user's typos

    if as_json:
        json.dump([r.to_dict() for r in results], stdout, indent=2)
        stdout.write("\n")
    else:
        print(format_table(results), file=stdout)
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as out:
            write_csv(results, out, top_k)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"dogbreeds predict: {len(failed)} of {len(results)} photo(s) failed",
              file=stderr)
        return EXIT_FAILED
    return EXIT_OK
