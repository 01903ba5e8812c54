"""``dogbreeds serve``: a small web demo — upload a dog photo, see its likely breeds.

One FastAPI app (:func:`create_app`) with:

- ``GET /``: a single offline page (inline CSS and JS, no CDN) with upload and drag-and-drop;
- ``POST /api/predict``: a multipart upload (any field name, ``file`` by convention) or the raw
  image as the request body → ``{"predictions": [{"breed", "label", "probability"}…],
  "model": {...}}`` (``breed`` is the raw class label, ``label`` its human-readable form);
- ``GET /api/health``: whether the model is loaded, and which one;
- ``POST /api/reload``: load the model again now (e.g. after ``dogbreeds promote``).

**Picking up a new champion.** The model is loaded once at start-up. For an alias URI
(``models:/<name>@<alias>``) a request also re-resolves the alias when the last check is older
than ``refresh_seconds`` (30 s by default; one registry lookup, cheap) and, if the alias now
points at another version, that request loads it and swaps it in — requests in flight keep
using the old model, nothing is dropped. ``POST /api/reload`` does the same immediately.

**Safety.** Uploads are capped while they are read (413 past ``max_upload_bytes``, the body is
never buffered beyond the cap); the image header is checked with PIL before anything decodes
it, so a "decompression bomb" (a tiny file claiming 30000×30000 px) is refused (413) without
allocating its pixels; non-images get 415, empty bodies 400, undecodable images 400. Every
error is JSON ``{"error": message}`` and the server keeps serving.

**Concurrency.** Inference runs in the threadpool, one call at a time behind a lock (a Keras
model behind a pyfunc wrapper is not documented as thread-safe), so the event loop stays
free and concurrent requests queue instead of failing.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from dogbreeds.serving.predict import (
    ModelLoadError,
    classify,
    decode_error,
    display_name,
    load_model,
    no_model_error,
    open_store,
)

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_PIXELS = 40_000_000
DEFAULT_TOP_K = 5
MAX_TOP_K = 20
REFRESH_SECONDS = 30.0
# Multipart framing (boundaries, part headers) on top of the file itself.
MULTIPART_SLACK = 64 * 1024
# An oversized upload is read and discarded up to this many bytes so the client receives the
# 413 instead of a connection reset while it is still sending; beyond it we just close.
DRAIN_BYTES = 64 * 1024 * 1024
DECODABLE_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP"}  # what the model's decoder (TF) reads


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    """

    def __init__(self, model_uri: str, refresh_seconds: float | None = REFRESH_SECONDS) -> None:
        self.model_uri = model_uri
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
            self._state = (load_model(uri), self._describe(version))
            self._last_check = time.monotonic()
            log.info("serving %s", self._state[1])
            return self.info

    def maybe_refresh(self) -> None:
        """Reload when the alias moved, checking at most every ``refresh_seconds``.

        Only one request checks at a time; the others go on with the current model. A
        registry that cannot be reached is logged and the current model keeps serving.
        """
        if not (self.ref and self.ref.alias) or self.refresh_seconds is None \
                or self.refresh_seconds < 0:
            return
        if time.monotonic() - self._last_check < self.refresh_seconds:
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

    def predict(self, image: bytes, top_k: int = DEFAULT_TOP_K) -> tuple[list[dict], dict]:
        """Top-k predictions for one encoded image, and the description of the model used.

        Raises:
            ApiError: 503 when no model is loaded, 400 when the model cannot decode the image.
        """
        self.maybe_refresh()
        model, info = self._state
        if model is None:
            raise ApiError(503, "no model loaded")
        try:
            with self._predict_lock:
                (ranked,) = classify(model, [image], top_k)
        except ValueError as exc:
            raise ApiError(400, f"could not decode the image: {decode_error(exc)}") from exc
        predictions = [{"breed": item["breed"], "label": display_name(item["breed"]),
                        "probability": item["probability"]} for item in ranked]
        return predictions, info


def check_image_header(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """Validate an upload from its header alone (no pixel is decoded).

    Returns:
        ``(format, width, height)``.

    Raises:
        ApiError: 400 empty, 415 not an image / unsupported format, 413 too many pixels.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, "empty upload: send a photo (JPEG, PNG, GIF, BMP or WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt, (width, height) = image.format or "", image.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"image too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ApiError(415, "not an image: send a photo (JPEG, PNG, GIF, BMP or WebP)") from exc
    if fmt not in DECODABLE_FORMATS:
        raise ApiError(415, f"unsupported image format {fmt or 'unknown'}: send JPEG, PNG, GIF, "
                            "BMP or WebP")
    if width * height > max_pixels:
        raise ApiError(413, f"image too large: {width}×{height} px is more than "
                            f"{max_pixels / 1e6:g} megapixels")
    if width < 1 or height < 1:
        raise ApiError(400, f"image has no pixels ({width}×{height})")
    return fmt, width, height


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass the body through, raising 413 as soon as it exceeds ``limit`` bytes."""
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            async for rest in stream:  # drain (not kept) so the client reads our answer
                total += len(rest)
                if total > DRAIN_BYTES:
                    break
            raise ApiError(413, f"upload too large: the limit is {limit // (1024 * 1024)} MB")
        yield chunk


async def read_upload(request: Request, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded file's bytes: the first file of a multipart form, else the raw body.

    Raises:
        ApiError: 413 beyond ``max_bytes`` (checked while reading), 400 for a malformed form.
    """
    too_large = ApiError(413, f"upload too large: the limit is {max_bytes // (1024 * 1024)} MB")
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    limit = max_bytes + (MULTIPART_SLACK if multipart else 0)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        async for _ in _capped(request.stream(), 0):  # drains, then raises 413
            pass
        raise too_large
    body = _capped(request.stream(), limit)
    if not multipart:
        return b"".join([chunk async for chunk in body])

    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=10)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, f"malformed upload: {exc}") from exc
    try:
        files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, "no file in the form: send the photo in a field named 'file'")
        data = await files[0].read(max_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise too_large
    return data


def index_html() -> str:
    """The demo page (``static/index.html``, shipped as package data)."""
    return (resources.files("dogbreeds.serving") / "static" / "index.html").read_text(encoding="utf-8")


def create_app(model_uri: str | None = None, *, holder: ModelHolder | None = None,
               refresh_seconds: float | None = REFRESH_SECONDS,
               max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The web app serving ``model_uri`` (or an existing ``holder``; loaded at start-up)."""
    if holder is None:
        if model_uri is None:
            raise ValueError("create_app needs a model_uri or a holder")
        holder = ModelHolder(model_uri, refresh_seconds=refresh_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not holder.loaded:
            await run_in_threadpool(holder.load)
        yield

    app = FastAPI(title="dogbreeds", summary="Which dog breed is in this photo?",
                  lifespan=lifespan)
    app.state.holder = holder
    page = index_html()

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if holder.loaded else "no model", "model_loaded": holder.loaded,
                "model": holder.info}

    @app.post("/api/reload")
    async def reload() -> JSONResponse:
        previous = holder.info
        try:
            current = await run_in_threadpool(holder.load)
        except ModelLoadError as exc:
            return JSONResponse({"error": str(exc), "model": holder.info}, status_code=503)
        return JSONResponse({"reloaded": True, "previous": previous, "model": current})

    @app.post("/api/predict")
    async def predict(request: Request, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        if not 1 <= top_k <= MAX_TOP_K:
            raise ApiError(400, f"top_k must be between 1 and {MAX_TOP_K}")
        data = await read_upload(request, max_upload_bytes)
        fmt, width, height = check_image_header(data, max_pixels)
        predictions, info = await run_in_threadpool(holder.predict, data, top_k)
        return {"predictions": predictions, "model": info,
                "image": {"format": fmt, "width": width, "height": height}}

    return app


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 8000, *,
          refresh_seconds: float | None = REFRESH_SECONDS) -> None:
    """Load the model, then serve the demo with uvicorn until interrupted.

    Exits with status 2 and a clear message when the model cannot be loaded.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    holder = ModelHolder(model_uri, refresh_seconds=refresh_seconds)
    try:
        info = holder.load()
    except ModelLoadError as exc:
        print(f"dogbreeds serve: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"dogbreeds serve: model {info}; open http://{host}:{port}/", flush=True)
    uvicorn.run(create_app(holder=holder), host=host, port=port)
