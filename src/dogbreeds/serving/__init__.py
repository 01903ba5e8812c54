"""Answering: the registered pyfunc, the predict CLI, the web demo."""

__all__ = ["predict", "pyfunc", "web"]
