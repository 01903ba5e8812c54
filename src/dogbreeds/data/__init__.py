"""Data: fetch and verify the archives, describe, split, augment, decode, feed Keras.

Import the modules directly (``from dogbreeds.data import ...``): this file imports nothing,
so a stage depends only on the modules it uses.
"""

__all__ = ["augment", "convert", "datasets", "download", "extract", "feedback", "fetch", "metadata",
           "photos", "preprocess", "sources", "split", "tables", "verify"]
