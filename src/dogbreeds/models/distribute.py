"""Scaling training out with ``tf.distribute`` (``base.distribute``), not home-made code.

- ``none``: TensorFlow's default strategy (one device).
- ``mirrored``: :class:`tf.distribute.MirroredStrategy` over every GPU of the host, or over
  the logical CPUs when there is no GPU and the CPU was split (:func:`split_cpu`; how the
  tests exercise it on a CPU-only machine).
- ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy`, one process per
  worker, configured by the ``TF_CONFIG`` environment variable (docs/scaling.md).

The batch size in params is per replica: the global batch grows with the replicas
(:func:`global_batch_size`), so each device sees the batch it was tuned for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

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


def make_strategy(name: str | None) -> tf.distribute.Strategy:
    """The strategy named by ``base.distribute``; build and compile models in its ``scope()``.

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
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribute strategy {name!r}: {' | '.join(STRATEGIES)}")


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
