"""Dynamic batching: photos that arrive together are predicted in one model call.

A forward pass of a MobileNetV2 costs ~15 ms for one photo and ~7 ms per photo in a batch of
32 on 2 cores: serving one request at a time wastes most of the model. :class:`Batcher` runs
the model in one worker thread. Each request decodes its photo in the server's thread pool
(in parallel with the model running the previous batch), then queues the pixels; the worker
takes everything queued — up to ``max_batch_size`` photos — into one call.

How long the worker waits for more is bounded by ``max_wait_ms`` and only happens when more
are on their way: a request announces itself (:meth:`Batcher.ticket`) before decoding, and the
worker waits only while some announced request is still decoding. A lone request therefore
never waits; under load the batch fills while the previous one runs.

What a request gets back is its output row, or — when the batcher has a ``finish`` — what
``finish`` makes of the whole batch's rows at once (the web demo builds its answers there: one
vectorised answer frame per batch instead of one per request on the event loop, which was
~1.2 ms of every request under 32 clients, py-spy).

A photo that cannot be decoded never reaches the queue (its request gets its 4xx), so a bad
upload cannot fail the others; if a model call itself fails, every request in that batch gets
the error and the worker goes on with the next batch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dogbreeds.settings import from_section, section


class Scorer(Protocol):
    """What the batcher needs from a model: model inputs → softmax rows."""

    def probabilities(self, batch: np.ndarray) -> np.ndarray: ...


def model_rows(scorer: Scorer, batch: np.ndarray) -> np.ndarray:
    """One output row per photo: the scorer's ``outputs`` when it has them (a pyfunc with a
    trust bundle: softmax + novelty features), else its softmax rows."""
    outputs = getattr(scorer, "outputs", None)
    return outputs(batch) if outputs is not None else scorer.probabilities(batch)


@dataclass(frozen=True)
class BatchSettings:
    """``serve`` in params.yaml: dynamic batching of ``dogbreeds serve``."""

    max_batch_size: int
    max_wait_ms: float

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> BatchSettings:
        return from_section(cls, section(params, "serve"), "serve").checked()

    def checked(self) -> BatchSettings:
        from dogbreeds.settings import SettingsError

        if self.max_batch_size < 1:
            raise SettingsError(
                f"serve.max_batch_size must be at least 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise SettingsError(f"serve.max_wait_ms must not be negative, got {self.max_wait_ms}")
        return self


# (scorer, the batch's output rows, each request's ``extra``) → one result per request.
Finish = Callable[[Any, np.ndarray, list[Any]], Sequence[Any]]


@dataclass
class _Item:
    scorer: Scorer
    pixels: np.ndarray
    future: Future
    extra: Any = None


class Ticket:
    """A request on its way to the queue (decoding): the worker may wait for it."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._open = True

    def submit(self, scorer: Scorer, pixels: np.ndarray, extra: Any = None) -> Future:
        """Queue one photo's model input; the future resolves to its output row, or to its
        result of the batcher's ``finish`` (which gets ``extra``, e.g. the request's top-k)."""
        future: Future = Future()
        self._batcher._enqueue(self, _Item(scorer, pixels, future, extra))
        return future

    def close(self) -> None:
        """The request will not submit (its photo was bad): stop waiting for it."""
        self._batcher._settle(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Batcher:
    """Groups queued photos into model calls in one worker thread (see module docstring)."""

    def __init__(self, settings: BatchSettings, finish: Finish | None = None) -> None:
        self.settings = settings
        self._finish = finish
        self._queue: deque[_Item] = deque()
        self._decoding = 0
        self._cond = threading.Condition()
        self._closed = False
        self.calls = 0
        self.photos = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._work, name="dogbreeds-batcher", daemon=True)
        self._thread.start()

    def ticket(self) -> Ticket:
        """Announce a request before decoding its photo (use as a context manager)."""
        with self._cond:
            self._decoding += 1
        return Ticket(self)

    def stats(self) -> dict[str, Any]:
        return {"max_batch_size": self.settings.max_batch_size,
                "max_wait_ms": self.settings.max_wait_ms, "model_calls": self.calls,
                "photos": self.photos, "largest_batch": self.largest_batch}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    # ----- the worker ---------------------------------------------------------------------

    def _settle(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket._open:
                ticket._open = False
                self._decoding -= 1
                self._cond.notify_all()

    def _enqueue(self, ticket: Ticket, item: _Item) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queue.append(item)
            if ticket._open:
                ticket._open = False
                self._decoding -= 1
            self._cond.notify_all()

    def _next_batch(self) -> list[_Item] | None:
        """Block for the first photo, then gather more while some are still decoding, until
        the batch is full or ``max_wait_ms`` after the first was taken."""
        limit = self.settings.max_batch_size
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + self.settings.max_wait_ms / 1000
            while len(self._queue) < limit and self._decoding > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            scorer = self._queue[0].scorer  # one model per call (a reload may swap it)
            batch: list[_Item] = []
            kept: deque[_Item] = deque()
            while self._queue:
                item = self._queue.popleft()
                (batch if item.scorer is scorer and len(batch) < limit else kept).append(item)
            self._queue = kept
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _run(self, batch: Sequence[_Item]) -> None:
        scorer = batch[0].scorer
        try:
            rows = model_rows(scorer, np.stack([item.pixels for item in batch]))
            results = rows if self._finish is None else \
                self._finish(scorer, rows, [item.extra for item in batch])
        except Exception as exc:  # the model failed: every request of this batch hears it
            for item in batch:
                item.future.set_exception(exc)
            return
        self.calls += 1
        self.photos += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)
