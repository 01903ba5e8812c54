"""Answering: the registered pyfunc, the predict CLI, the web demo, runtimes.

Import the modules directly (``from dogbreeds.serving import ...``): this file imports nothing,
so a stage depends only on the modules it uses.
"""

__all__ = ["answers", "batching", "forward", "holder", "inputs", "predict", "predlog", "pyfunc",
           "records", "runtimes", "uploads", "web"]
