"""Answering: the registered pyfunc, the predict CLI, the web demo."""

__all__ = ["holder", "predict", "pyfunc", "uploads", "web"]
