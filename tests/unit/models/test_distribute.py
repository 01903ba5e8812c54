"""dogbreeds.models.distribute: tf.distribute strategies, tested for real on a CPU-only machine.

``mirrored``: the CPU is split into 2 logical devices in a subprocess (the split must happen
before TensorFlow initialises, and must not leak into this test process), and the project's
resumable fit trains under MirroredStrategy with 2 replicas. ``multi_worker``: two worker
processes on 127.0.0.1, configured by TF_CONFIG, train together
(:mod:`dogbreeds.models.multiworker`); a worker that never joins is a timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dogbreeds.models import distribute
from support.cluster import tf_configs, wait_all
from support.project import REPO, venv_env


def run_script(code: str, tmp_path: Path, timeout: float = 180, **env: str) -> dict:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, timeout=timeout,
                            env=venv_env(PYTHONPATH=str(REPO / "tests"), **env),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_global_batch_is_per_replica_times_replicas():
    import tensorflow as tf

    assert distribute.global_batch_size(32, tf.distribute.get_strategy()) == 32
    assert distribute.make_strategy("none") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="unknown distribute strategy 'tpu'"):
        distribute.make_strategy("tpu")


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multi_worker needs TF_CONFIG"):
        distribute.make_strategy("multi_worker")


@pytest.mark.parametrize(("task", "cluster", "chief"), [
    (None, None, True),
    ({"type": "worker", "index": 0}, {"worker": ["a", "b"]}, True),
    ({"type": "worker", "index": 1}, {"worker": ["a", "b"]}, False),
    ({"type": "chief", "index": 0}, {"chief": ["c"], "worker": ["a"]}, True),
    ({"type": "worker", "index": 0}, {"chief": ["c"], "worker": ["a"]}, False),
])
def test_only_the_chief_writes(task, cluster, chief):
    env = {} if task is None else {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}
    assert distribute.is_chief(env) is chief


MIRRORED = """
    import json, numpy as np
    from dogbreeds.models import distribute
    devices = distribute.split_cpu(2)          # before any TF op
    import keras, mlflow
    from support import tiny_models
    from pathlib import Path
    from dogbreeds.data import datasets
    from dogbreeds.tracking import store
    from dogbreeds.models import fit

    strategy = distribute.make_strategy("mirrored")
    batch = distribute.global_batch_size(4, strategy)
    rng = np.random.default_rng(0)
    x = np.stack([tiny_models.breed_rgb(b, rng) for b in tiny_models.CLASSES for _ in range(8)])
    y = np.repeat(np.arange(3), 8)
    train = datasets.array_dataset(x.astype("float32"), y, batch, shuffle=True, seed=0)
    val = datasets.array_dataset(x[::2].astype("float32"), y[::2], batch)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((32, 32, 3))
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(4, 3, activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer=keras.optimizers.Adam(0.05),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class Steps(keras.callbacks.Callback):
        steps = 0
        def on_train_batch_end(self, batch, logs=None):
            Steps.steps += 1

    with store.stage_run("train_scratch", Path("."), experiment="t"):
        # One step per epoch through the project's own resumable fit, then count batches.
        result = fit.fit_resumable(model, train, val, epochs=3, work_dir=Path("ckpt"),
                                   early_stopping_patience=5, verbose=0)
        model.fit(train, epochs=1, verbose=0, callbacks=[Steps()])
    var = model.trainable_variables[0]
    copies = [v.numpy() for v in var.value.values] if hasattr(var.value, "values") else []
    print(json.dumps({
        "devices": [d.name for d in devices],
        "replicas": strategy.num_replicas_in_sync,
        "strategy": type(strategy).__name__,
        "global_batch": batch,
        "steps": Steps.steps,
        "losses": result.history["loss"].tolist(),
        "copies": len(copies),
        "copies_equal": all(np.array_equal(copies[0], c) for c in copies),
    }))
"""


@pytest.mark.slow
def test_mirrored_trains_on_two_logical_cpus(tmp_path):
    out = run_script(MIRRORED, tmp_path)
    assert out["devices"] == ["/device:CPU:0", "/device:CPU:1"]
    assert out["strategy"] == "MirroredStrategy" and out["replicas"] == 2
    assert out["global_batch"] == 8
    assert out["steps"] == 3  # 24 images / global batch 8: each step feeds both replicas
    assert len(out["losses"]) == 3 and out["losses"][-1] < out["losses"][0]
    assert out["copies"] == 2 and out["copies_equal"]  # replicas stay in sync


MULTI_WORKER = """
    import json, os, numpy as np
    from dogbreeds.models import distribute
    strategy = distribute.make_strategy("multi_worker", join_timeout=60, heartbeat_timeout=10)
    import keras
    from support import tiny_models
    import tensorflow as tf
    from dogbreeds.models import multiworker

    index = distribute.tf_config()["task"]["index"]
    # The cluster formed: a collective all-reduce across both processes (1 + 2).
    total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(float(index + 1))),
                            axis=None)
    batch = distribute.global_batch_size(4, strategy)
    rng = np.random.default_rng(0)
    x = np.stack([tiny_models.breed_rgb(b, rng) for b in tiny_models.CLASSES for _ in range(8)])
    y = np.repeat(np.arange(3), 8)
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(batch)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((32, 32, 3))
        h = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        h = keras.layers.Dropout(0.1)(h)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss="sparse_categorical_crossentropy")
    result = multiworker.fit_multi_worker(model, ds, ds, strategy=strategy, epochs=2,
                                          early_stopping_patience=5, log_epochs=False)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync, "global_batch": batch,
        "chief": distribute.is_chief(), "all_reduce": float(total),
        "history": result.history.to_dict("list"),
        "weights": [float(w.numpy().sum()) for w in model.trainable_variables],
    }))
"""


def start_worker(script: Path, tf_config: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script)], cwd=script.parent, text=True,
                            env=venv_env(PYTHONPATH=str(REPO / "tests"), TF_CONFIG=tf_config),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_multi_worker_two_processes_on_localhost(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(MULTI_WORKER))
    done = wait_all([start_worker(script, config) for config in tf_configs(2)], timeout=240)
    for worker in done:
        assert worker.returncode == 0, worker.stderr[-3000:]
    results = [json.loads(w.stdout.strip().splitlines()[-1]) for w in done]
    assert [r["replicas"] for r in results] == [2, 2]
    assert [r["global_batch"] for r in results] == [8, 8]
    assert [r["chief"] for r in results] == [True, False]
    assert [r["all_reduce"] for r in results] == [3.0, 3.0]
    history = results[0]["history"]
    assert history["epoch"] == [1, 2] and history["loss"][1] < history["loss"][0]
    assert set(history) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    # Every worker sees the same all-reduced metrics and ends with the same weights.
    assert results[1]["history"] == results[0]["history"]
    assert results[0]["weights"] == pytest.approx(results[1]["weights"], rel=1e-6)


@pytest.mark.slow
def test_a_worker_that_never_joins_is_a_timeout_not_a_hang(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(MULTI_WORKER.replace("join_timeout=60",
                                                           "join_timeout=8")))
    alone = tf_configs(2)[0]  # worker 1 of the cluster is never started
    [worker] = wait_all([start_worker(script, alone)], timeout=120)
    assert worker.returncode == -signal.SIGKILL  # by the watchdog
    assert "did not form within 8 s" in worker.stderr
    assert "is every worker of TF_CONFIG started" in worker.stderr
    assert worker.seconds < 90  # TensorFlow alone would wait for an hour
