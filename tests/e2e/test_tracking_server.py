"""A shared MLflow tracking server: training and registration through ``MLFLOW_TRACKING_URI``.

A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifact proxying to a folder): the
client never sees the artifact folder, so everything it logs travels over HTTP, as it would
to a team's server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow import MlflowClient

from dogbreeds.data import datasets
from dogbreeds.models import fit, record
from dogbreeds.tracking import store
from support import tiny_models
from support.project import venv_env
from support.servers import free_port

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Server:
    url: str
    artifacts: Path
    process: subprocess.Popen


@contextlib.contextmanager
def mlflow_server(workdir: Path, timeout: float = 90) -> Iterator[Server]:
    """``mlflow server`` with a SQLite backend and proxied artifacts; killed on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    artifacts = workdir / "artifacts"
    log = open(workdir / "server.log", "wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server",
         "--backend-store-uri", f"sqlite:///{workdir / 'srv.db'}",
         "--artifacts-destination", str(artifacts),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, env=venv_env(), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)  # its own process group: the workers die with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError("mlflow server exited:\n"
                                   + (workdir / "server.log").read_text()[-3000:])
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not healthy after {timeout} s")
            time.sleep(0.5)
        yield Server(url, artifacts, process)
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen) -> None:
    """Kill the server's whole process group (gunicorn/uvicorn workers included)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


def tiny_datasets(n_per_class: int = 8):
    """(train_ds, val_ds) of tiny_models' colour-coded 32 px breeds."""
    rng = np.random.default_rng(0)
    classes = tiny_models.CLASSES
    x = np.stack([tiny_models.breed_rgb(b, rng) for b in classes for _ in range(n_per_class)])
    y = np.repeat(np.arange(len(classes)), n_per_class)
    return (datasets.array_dataset(x.astype("float32"), y, 8, shuffle=True, seed=0),
            datasets.array_dataset(x[::2].astype("float32"), y[::2], 8))


def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((tiny_models.SIZE, tiny_models.SIZE, 3))
    h = keras.layers.Rescaling(1 / 255)(inputs)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(len(tiny_models.CLASSES), activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_training_and_registration_through_the_server(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.chdir(tmp_path)  # a stray local store would show up here
    train_ds, val_ds = tiny_datasets()
    out = tmp_path / "models" / "scratch"
    with store.stage_run("train_scratch", tmp_path, params={"lr": 0.05},
                            experiment="shared") as run:
        run_id = run.info.run_id
        metrics = record.fit_and_record(
            tiny_model(), train_ds, val_ds, name="scratch", kind="scratch", out_dir=out,
            epochs=2, classes=tiny_models.CLASSES, image_size=tiny_models.SIZE,
            n_train_images=24, early_stopping_patience=3, work_dir=tmp_path / "ckpt",
            verbose=0)
    card = json.loads((out / "card.json").read_text())
    version = mlflow.register_model(card["model_uri"], "dogbreeds-shared")
    client = MlflowClient()
    client.set_registered_model_alias("dogbreeds-shared", "champion", version.version)

    # Everything is on the server, read back through a fresh client over HTTP.
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    remote_run = client.get_run(run_id)
    assert remote_run.info.status == "FINISHED"
    assert remote_run.data.tags["dogbreeds.stage"] == "train_scratch"
    assert remote_run.data.metrics["best_val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert len(client.get_metric_history(run_id, "val_loss")) == 2
    champion = client.get_model_version_by_alias("dogbreeds-shared", "champion")
    assert champion.version == version.version == "1"
    assert champion.run_id == run_id

    # Artifacts were proxied into the server's folder; nothing went to a local mlruns/.
    stored = files_under(server.artifacts)
    assert any(p.endswith("curves.png") for p in stored)
    assert any(p.endswith("history.csv") for p in stored)
    assert any(p.endswith("MLmodel") for p in stored)
    assert remote_run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()

    # The registered model loads back through the server and predicts.
    loaded = mlflow.pyfunc.load_model("models:/dogbreeds-shared@champion")
    x = next(iter(val_ds))[0].numpy()
    assert np.asarray(loaded.predict(x)).shape == (len(x), len(tiny_models.CLASSES))


def test_server_lost_before_recording_keeps_local_results(tmp_path, monkeypatch):
    """The server dies after training: the stage fails, but the model and its numbers stay on
    disk (a later ``dvc repro`` or a manual sync can log them)."""
    train_ds, val_ds = tiny_datasets()
    out = tmp_path / "models" / "scratch"
    with mlflow_server(tmp_path / "srv") as srv:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url)
        with pytest.raises(mlflow.exceptions.MlflowException, match="127.0.0.1"):
            with store.stage_run("train_scratch", tmp_path, experiment="shared"):
                result = fit.fit_resumable(tiny_model(), train_ds, val_ds, epochs=2,
                                         work_dir=tmp_path / "ckpt",
                                         early_stopping_patience=3, verbose=0)
                stop(srv.process)
                start = time.monotonic()
                try:
                    record.record_model(
                        tiny_model(), result.history, name="scratch", kind="scratch",
                        out_dir=out, classes=tiny_models.CLASSES, image_size=tiny_models.SIZE,
                        train_seconds=result.seconds, images_per_second=1.0)
                finally:
                    elapsed = time.monotonic() - start
    assert elapsed < 60  # bounded retries, not a hang
    assert (out / "model.keras").is_file()
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 2  # header + 2 epochs
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((out / "card.json").read_text())["name"] == "scratch"
