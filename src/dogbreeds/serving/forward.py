"""The model's forward pass for serving: a compiled Keras call (no per-call ``predict`` cost).

``keras.Model.predict`` builds a data pipeline and a progress machinery on every call: ~100 ms
for one photo of a MobileNetV2-160 on 2 cores, where the forward pass itself takes ~15 ms.
An eager ``model(x)`` is slower still. :func:`compiled_call` traces the model once into a
``tf.function`` with a fixed input signature (any batch size, the model's image size), so
every call after the first runs the graph directly (measured: benchmarks/serving.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

Forward = Callable[[np.ndarray], np.ndarray]


def compiled_call(model, image_size: int) -> Forward:
    """float32 ``[N, size, size, 3]`` → the model's output as numpy (a tuple of arrays for a
    model with several outputs), through one graph call.

    The signature's batch dimension is free, so no batch size ever retraces; calls are
    thread-safe (TF runs concurrent graph calls).
    """
    spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")
    graph = tf.function(lambda images: model(images, training=False), input_signature=[spec])

    def forward(batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        out = graph(tf.convert_to_tensor(batch, tf.float32))
        # A model with several outputs (probabilities + novelty features) gives a tuple.
        return tuple(np.asarray(o) for o in out) if isinstance(out, (list, tuple)) \
            else np.asarray(out)

    return forward
