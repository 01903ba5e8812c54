"""A tiny trained breed classifier in a throw-away MLflow registry, and a real test server.

:func:`build_registry` trains :mod:`tiny_models`' small Keras CNN on :mod:`fakedata`'s
colour-coded breeds, logs it with :func:`dogbreeds.serving.pyfunc.log_classifier` and registers it
as ``dogbreeds`` version 1 with alias ``champion`` in a SQLite store — the same shape as the
real pipeline's output, in seconds (the ``tiny_registry`` fixture). :func:`running_app` serves
an ASGI app with a real uvicorn on 127.0.0.1 (a free port) in a thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support import fakedata, tiny_models

MODEL_NAME = "dogbreeds"


@dataclass(frozen=True)
class TinyRegistry:
    root: Path                        # project folder holding mlflow.db and mlruns/
    tracking_uri: str                 # sqlite:///…/mlflow.db (tracking and registry)
    model_name: str                   # registered as version 1, alias champion
    logged_model_uri: str             # models:/m-… (register it again for more versions)
    classes: list[str]                # label order
    photos: dict[str, list[Path]]     # breed -> JPEGs (not trained on) the model gets right


def build_registry(workdir: Path) -> TinyRegistry:
    """Train, log and register the tiny classifier under ``workdir`` (its project root)."""
    import mlflow

    from dogbreeds.tracking import store

    held_out = fakedata.make_tree(workdir / "photos", per_breed=2, size=48, seed=1)
    classes = tiny_models.CLASSES
    root = workdir / "project"
    root.mkdir()
    info = tiny_models.log_tiny_classifier(root, "tests", keras_file=workdir / "model.keras",
                                           registered_model_name=MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion",
                                                     str(info.registered_model_version))
    photos = {folder.split("-", 1)[1]: [workdir / "photos" / "Images" / f for f in files]
              for folder, files in held_out.items()}
    return TinyRegistry(root=root, tracking_uri=store.local_tracking_uri(root),
                        model_name=MODEL_NAME, logged_model_uri=info.model_uri,
                        classes=classes, photos=photos)


@contextlib.contextmanager
def running_app(app, timeout: float = 120.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (free port) in a thread; yield its base URL.

    The app's lifespan (model loading) completes before the URL is yielded.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn stopped during start-up (see the log above)")
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def empty_registered_model(root: Path, name: str, experiment: str = "registry-test"):
    """The project store under ``root`` (SQLite, selected for this process) holding a new
    registered model ``name`` with no version yet; return its ``MlflowClient``."""
    from mlflow.tracking import MlflowClient

    from dogbreeds.tracking import store

    store.configure(root, experiment)
    client = MlflowClient()
    client.create_registered_model(name)
    return client
