"""dogbreeds.models.multiworker: a worker killed mid-training fails the job fast and clearly.

(Training itself on two workers: tests/unit/models/test_distribute.py and
tests/stages/test_multi_worker.py.) The job does not recover: multi-worker training does not
resume, the surviving worker raises :class:`~dogbreeds.models.multiworker.WorkerLost`
within the heartbeat timeout and exits non-zero, and the job is rerun.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time

import pytest
import tensorflow as tf

from dogbreeds.models import multiworker
from support.cluster import start_workers, wait_all

HEARTBEAT = 5

ENDLESS = f"""
    import numpy as np
    from dogbreeds.models import distribute, multiworker
    strategy = distribute.make_strategy("multi_worker", join_timeout=60,
                                        heartbeat_timeout={HEARTBEAT})
    import keras, tensorflow as tf
    x = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    y = np.arange(64) % 3
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with strategy.scope():
        inputs = keras.Input((8, 8, 3))
        h = keras.layers.GlobalAveragePooling2D()(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    multiworker.fit_multi_worker(model, ds, ds, strategy=strategy, epochs=100000,
                                 early_stopping_patience=100000, log_epochs=False, verbose=1)
"""


def test_only_multi_worker_strategies_take_the_custom_step():
    assert not multiworker.is_multi_worker(tf.distribute.get_strategy())
    assert not multiworker.is_multi_worker(None)


@pytest.mark.slow
def test_a_worker_killed_mid_training_fails_the_job_fast_with_a_clear_message(tmp_path):
    script = tmp_path / "endless.py"
    script.write_text(textwrap.dedent(ENDLESS))
    survivor, victim = start_workers([sys.executable, str(script)], tmp_path, n=2)
    try:
        deadline = time.monotonic() + 180
        for line in survivor.stdout:  # training is under way on both workers
            if line.startswith("epoch 3/") or time.monotonic() > deadline:
                break
        assert survivor.poll() is None, survivor.stderr.read()[-3000:]
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        [done] = wait_all([survivor], timeout=120)
        noticed = time.monotonic() - killed
    finally:
        wait_all([survivor, victim], timeout=1)
    assert done.returncode != 0
    assert "WorkerLost: multi-worker training lost a peer in epoch" in done.stderr
    assert "rerun the job on all machines" in done.stderr
    assert noticed < HEARTBEAT + 60  # seconds, not a hang
