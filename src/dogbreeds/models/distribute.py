"""Scaling training out with ``tf.distribute`` (``base.distribute``), not home-made code.

- ``none``: TensorFlow's default strategy (one device).
- ``mirrored``: :class:`tf.distribute.MirroredStrategy` over every GPU of the host, or over
  the logical CPUs when there is no GPU and the CPU was split (:func:`split_cpu`; how the
  tests exercise it on a CPU-only machine).
- ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, one process per
  worker, configured by the ``TF_CONFIG`` environment variable (docs/scaling.md).

Multi-worker jobs fail instead of hanging: a worker that never joins ends every other one
after ``join_timeout`` seconds, a worker that dies mid-training after ``heartbeat_timeout``
seconds (TensorFlow's coordination service; the timeouts come from params ``base``). Only
the chief writes (:func:`is_chief`, :func:`output_root`). Keras ``fit`` does not run under
this strategy with the pinned Keras 3: :mod:`dogbreeds.models.multiworker` trains there.

The batch size in params is per replica: the global batch grows with the replicas
(:func:`global_batch_size`), so each device sees the batch it was tuned for.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context

STRATEGIES = ("none", "mirrored", "multi_worker")


def split_cpu(n: int) -> list[tf.config.LogicalDevice]:
    """Split the physical CPU into ``n`` logical devices (``/cpu:0`` … ``/cpu:n-1``).

    Must run before TensorFlow initialises its devices (before any op or strategy).

    Raises:
        RuntimeError: TensorFlow's devices are already initialised.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(n))])
    return tf.config.list_logical_devices("CPU")


def local_devices() -> list[str]:
    """Devices a mirrored strategy replicates over: every GPU, else every logical CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(name: str | None, *, join_timeout: float = 0,
                  heartbeat_timeout: float = 0) -> tf.distribute.Strategy:
    """The strategy named by ``base.distribute``; build and compile models in its ``scope()``.

    For ``multi_worker``, ``join_timeout`` bounds the wait for every worker of ``TF_CONFIG``
    to start and ``heartbeat_timeout`` how long a silent (dead) peer goes unnoticed (0: wait
    forever / TensorFlow's default). When a worker does not join in time, this process is
    killed (SIGKILL, by a :class:`Watchdog`) after a message on stderr.

    Raises:
        ValueError: for an unknown name, or ``multi_worker`` without a valid ``TF_CONFIG``.
    """
    name = (name or "none").lower()
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # MirroredStrategy() alone ignores logical CPUs (it uses GPUs or just /cpu:0).
        return tf.distribute.MirroredStrategy(devices=local_devices())
    if name == "multi_worker":
        worker = tf_config()
        if not worker.get("cluster", {}).get("worker") or "task" not in worker:
            raise ValueError("multi_worker needs TF_CONFIG with cluster.worker and task "
                             "(see docs/scaling.md)")
        configure_coordination(worker, heartbeat_timeout)
        # A missing worker blocks inside TensorFlow's C++ (no timeout reaches it, measured):
        # a watchdog ends the process with a clear message instead of a hang.
        workers = ", ".join(worker["cluster"].get("chief", []) + worker["cluster"]["worker"])
        watchdog = Watchdog(join_timeout,
                            f"multi_worker: the cluster ({workers}) did not form within "
                            f"{join_timeout:g} s (base.join_timeout_seconds): is every worker "
                            "of TF_CONFIG started and reachable? Stopping this worker.")
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            join_cluster(strategy)
        finally:
            watchdog.cancel()
        return strategy
    raise ValueError(f"unknown distribute strategy {name!r}: {' | '.join(STRATEGIES)}")


def join_cluster(strategy: tf.distribute.Strategy) -> float:
    """One all-reduce across every worker; the number of replicas that answered.

    The cluster forms lazily: this first collective is what waits for every worker.
    """
    one = strategy.run(lambda: tf.constant(1.0))
    return float(strategy.reduce("SUM", one, axis=None))


_WATCHDOG = """
import os, select, signal, sys
pid, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:  # not cancelled (stdin closed) in time
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


class Watchdog:
    """Kills this process after ``seconds`` with ``message`` on stderr, unless cancelled.

    A separate process, not a thread: TensorFlow may block in C++ without releasing the GIL
    while it waits for a worker (measured: a ``threading.Timer`` never fired).
    """

    def __init__(self, seconds: float, message: str):
        self.proc = None
        if seconds:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message],
                stdin=subprocess.PIPE)

    def cancel(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def configure_coordination(config: Mapping[str, Any], heartbeat_timeout: float) -> None:
    """Start TensorFlow's coordination service with our heartbeat timeout (before the
    strategy): a peer silent that long fails every collective with ``UnavailableError``.

    ``MultiWorkerMirroredStrategy`` configures the same service with no timeouts when none is
    configured; the public API has no way to pass them, hence the ``context`` call.
    """
    cluster = tf.train.ClusterSpec(config["cluster"])
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=int(heartbeat_timeout * 1000))


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Batch size fed to ``fit``: the per-replica batch × the replicas in sync."""
    return int(per_replica) * int(strategy.num_replicas_in_sync)


def tf_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` (empty when unset)."""
    text = (environ if environ is not None else os.environ).get("TF_CONFIG", "")
    return json.loads(text) if text.strip() else {}


def is_chief(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process writes outputs and logs to MLflow.

    Every multi-worker process runs the same ``fit``; only one must write ``models/`` and
    open the MLflow run: the ``chief`` task, or worker 0 when the cluster has no chief
    (TensorFlow's convention). Without ``TF_CONFIG`` the single process is the chief.
    """
    config = tf_config(environ)
    task = config.get("task") or {}
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = bool(config.get("cluster", {}).get("chief"))
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not has_chief


@contextlib.contextmanager
def output_root(root: Path, environ: Mapping[str, str] | None = None) -> Iterator[Path]:
    """Where this process writes its outputs and MLflow runs.

    The chief gets the project ``root``. Any other worker runs the same code (TensorFlow's
    convention: every worker saves, so they stay in step) into a temporary directory, with
    its own throwaway SQLite MLflow store there, removed when the stage ends: model files,
    ``card.json``, ``metrics.json``, DVC outputs and MLflow runs come from the chief only.
    """
    if is_chief(environ):
        yield Path(root)
        return
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="dogbreeds-worker-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp).as_posix()}/mlflow.db"
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        try:
            yield Path(tmp)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
