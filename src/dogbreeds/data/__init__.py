"""Data: download, metadata, split, augment, preprocess, datasets (import them directly)."""

__all__ = ["augment", "datasets", "download", "metadata", "preprocess", "split"]
