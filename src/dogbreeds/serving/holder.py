"""The served model, what it is, and how it is swapped for a newer champion.

The model is loaded once at start-up. For an alias URI (``models:/<name>@<alias>``) a request
also re-resolves the alias when the last check is older than ``refresh_seconds`` (30 s by
default; one registry lookup, cheap) and, if the alias now points at another version, that
request loads it and swaps it in — requests in flight keep using the old model, nothing is
dropped. :meth:`ModelHolder.load` does the same immediately (``POST /api/reload``).

:meth:`ModelHolder.predict` runs one call at a time behind a lock (a pyfunc wrapper is not
documented as thread-safe); the web demo instead takes the model's scorer
(:meth:`ModelHolder.scorer`: decode + compiled forward pass) and batches its calls
(:mod:`dogbreeds.serving.batching`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from dogbreeds.serving.answers import display_name, labelled_answer
from dogbreeds.serving.predict import (
    answer_photos,
    decode_error,
    load_model,
    no_model_error,
    open_store,
)
from dogbreeds.serving.uploads import ApiError

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class RegistryRef:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""

    name: str
    alias: str | None = None
    version: str | None = None


def parse_registry_uri(model_uri: str) -> RegistryRef | None:
    """The registered model a URI names, or None for other URIs (runs:/, paths, models:/m-…)."""
    prefix = "models:/"
    if not model_uri.startswith(prefix):
        return None
    rest = model_uri[len(prefix):].strip("/")
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        return RegistryRef(name=name, alias=alias) if name and alias else None
    name, _, version = rest.rpartition("/")
    if name and version.isdigit():
        return RegistryRef(name=name, version=version)
    return None


def resolve_alias(name: str, alias: str, registry_uri: str | None = None) -> str:
    """The version number (as text) an alias points at now."""
    from mlflow import MlflowClient

    client = MlflowClient(registry_uri=registry_uri)
    return str(client.get_model_version_by_alias(name, alias).version)


class ModelHolder:
    """The served model, what it is, and how it is swapped for a newer champion.

    Args:
        model_uri: any MLflow model URI.
        refresh_seconds: minimum time between two alias checks made by requests
            (``None`` or a negative value: only ``/api/reload`` reloads).
        runtime: ``pyfunc`` (the registered model) or ``litert`` (its exported runtime).
    """

    def __init__(self, model_uri: str, refresh_seconds: float | None = REFRESH_SECONDS,
                 runtime: str = "pyfunc") -> None:
        self.model_uri = model_uri
        self.runtime = runtime
        self.ref = parse_registry_uri(model_uri)
        self.refresh_seconds = refresh_seconds
        # (model, description) in one attribute: a request reads either the old pair or the
        # new one, never a new model with the old version number.
        self._state: tuple[Any, dict[str, Any]] = (None, self._describe(None))
        self._predict_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._registry_uri: str | None = None

    @property
    def loaded(self) -> bool:
        return self._state[0] is not None

    @property
    def info(self) -> dict[str, Any]:
        return dict(self._state[1])

    def _describe(self, version: str | None) -> dict[str, Any]:
        ref = self.ref
        return {"uri": self.model_uri, "name": ref.name if ref else None,
                "version": version or (ref.version if ref else None),
                "alias": ref.alias if ref else None}

    def load(self) -> dict[str, Any]:
        """(Re)load the model now and swap it in; return the new model's description.

        An alias is resolved first and the exact version loaded, so the version reported is
        the one answering even if the alias moves during the load.

        Raises:
            ModelLoadError: the URI (or the alias) does not lead to a model; the model
                served so far, if any, stays in place.
        """
        with self._load_lock:
            # Kept for the alias checks: they must ask this registry even if a caller later
            # points the process-wide MLflow settings elsewhere.
            self._registry_uri = open_store(self.model_uri)
            version, uri = None, self.model_uri
            if self.ref and self.ref.alias:
                try:
                    version = resolve_alias(self.ref.name, self.ref.alias, self._registry_uri)
                except Exception as exc:
                    raise no_model_error(self.model_uri, exc) from exc
                uri = f"models:/{self.ref.name}/{version}"
            self._state = (load_model(uri, self.runtime), self._describe(version))
            self._last_check = time.monotonic()
            log.info("serving %s", self._state[1])
            return self.info

    def maybe_refresh(self) -> None:
        """Reload when the alias moved, checking at most every ``refresh_seconds``.

        Only one request checks at a time; the others go on with the current model. A
        registry that cannot be reached is logged and the current model keeps serving.
        """
        if self.check_is_quick():
            return
        if not self._check_lock.acquire(blocking=False):
            return
        try:
            self._last_check = time.monotonic()
            version = resolve_alias(self.ref.name, self.ref.alias, self._registry_uri)
            if version != self._state[1]["version"]:
                log.info("%s now points at version %s: reloading", self.model_uri, version)
                self.load()
        except Exception:
            log.warning("could not refresh %s; still serving %s", self.model_uri,
                        self._state[1], exc_info=True)
        finally:
            self._check_lock.release()

    def check_is_quick(self) -> bool:
        """Whether :meth:`scorer` returns at once (no registry lookup due), so an async caller
        may skip the hop to a worker thread."""
        return not (self.ref and self.ref.alias) or self.refresh_seconds is None \
            or self.refresh_seconds < 0 \
            or time.monotonic() - self._last_check < self.refresh_seconds

    def scorer(self) -> tuple[Any, dict[str, Any]]:
        """The served model's scorer (``preprocess``, ``probabilities``, ``classes``) and its
        description, after the alias check.

        Raises:
            ApiError: 503 when no model is loaded.
        """
        self.maybe_refresh()
        model, info = self._state
        if model is None:
            raise ApiError(503, "no model loaded")
        # A pyfunc wraps the BreedClassifier; an exported runtime is its own scorer.
        unwrap = getattr(model, "unwrap_python_model", None)
        return (unwrap() if unwrap else model), info

    def predict(self, image: bytes, top_k: int = DEFAULT_TOP_K) -> tuple[list[dict], dict]:
        """Top-k predictions for one encoded image, and the description of the model used.

        Raises:
            ApiError: 503 when no model is loaded, 400 when the model cannot decode the image.
        """
        predictions, _, info = self.answer(image, top_k)
        return predictions, info

    def answer(self, image: bytes, top_k: int = DEFAULT_TOP_K
               ) -> tuple[list[dict], dict, dict]:
        """:meth:`predict` plus the model's answer in words
        (:func:`dogbreeds.serving.answers.labelled_answer`: status, candidates, message)."""
        self.maybe_refresh()
        model, info = self._state
        if model is None:
            raise ApiError(503, "no model loaded")
        try:
            with self._predict_lock:
                ((ranked, answer),) = answer_photos(model, [image], top_k)
        except ValueError as exc:
            raise ApiError(400, f"could not decode the image: {decode_error(exc)}") from exc
        return labelled(ranked), labelled_answer(answer), info


def labelled(ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{"breed", "probability"}]`` → the API's ``[{"breed", "label", "probability"}]``."""
    return [{"breed": item["breed"], "label": display_name(item["breed"]),
             "probability": item["probability"]} for item in ranked]
