"""Benchmarks: scripts that measure the pipeline against the obvious alternatives.

Each module is runnable (``python -m benchmarks.<name>``), prints its numbers and the ratio to
its baseline, and writes ``benchmarks/results/<name>.json``. None of them is a test: they
assert nothing. ``python -m benchmarks.run_all`` runs them all; see ``benchmarks/README.md``.
"""
