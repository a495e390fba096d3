"""Continuous cross-request dynamic batching in front of one engine.

Each submitted text is tokenized once, in submit(): the token counts form the batches and the
same encodings go to the engine. One engine thread runs batches back to back. When it is idle, a submission starts at once (no
added wait at low load). While a batch runs, new texts queue; the next batch takes the oldest
queued text plus the queued texts closest to it in length, as many as fit within
BATCH_MAX_TEXTS, BATCH_MAX_TOKENS (padded tokens = texts x longest) and BATCH_MAX_PADDING.
Every text of a batch is padded to the longest, and padding is compute spent for nothing: on
a CPU a batch of mixed lengths can be slower than running its texts one by one, so a text
joins only while the padding stays a small share of the real tokens. The oldest text always
goes next, so a long text cannot starve.
A request's texts may be spread over several batches; its future resolves once all are scored.
The queue is bounded twice: a submission that does not fit raises Overloaded at once, and a
request none of whose texts has started after QUEUE_MAX_WAIT_SECONDS fails with Overloaded
instead of being computed for a client that has likely given up. The limit is on waiting for
others: once a request's first batch has started, the rest of its texts are computed, however
long its own batches take (a retry would take as long, so shedding it would refuse it forever).

With BATCHING=false each request runs alone (the naive configuration, for comparison), still
one engine call at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence, Sized
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from model import metrics

if TYPE_CHECKING:
    from model.engines import Engine

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full (or the batcher is stopping): the caller should retry later."""


@dataclass(eq=False)
class _Request:
    """One submission: its texts' rows fill `scores`; the future resolves when all are in."""

    future: Future
    size: int
    scores: np.ndarray | None = None
    remaining: int = 0
    started: bool = False  # one of its texts reached the engine: no longer shed for waiting
    failed: bool = False


@dataclass(eq=False)
class _Item:
    """One queued text: its encoding (tokenized once, here), its token count, where its row goes."""

    encoding: Sized
    tokens: int
    request: _Request
    index: int
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """`submit(texts)` returns a Future of a (len(texts), labels) float32 array."""

    def __init__(
        self,
        engine: Engine,
        max_batch_texts: int = 64,
        max_batch_tokens: int = 8192,
        max_queue_texts: int = 1024,
        batching: bool = True,
        max_padding: float = 0.25,
        max_wait_seconds: float = 10.0,
    ) -> None:
        self.engine = engine
        self.max_batch_texts = max_batch_texts
        self.max_batch_tokens = max_batch_tokens
        self.max_padding = max_padding
        self.max_wait_seconds = max_wait_seconds
        self.max_queue_texts = max_queue_texts
        self.batching = batching
        self._queue: list[_Item] = []
        self._waiting_alone = 0  # texts waiting for the engine lock (batching off)
        self._condition = threading.Condition()
        self._engine_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        if batching:
            self._thread = threading.Thread(target=self._run, name="engine-batcher", daemon=True)
            self._thread.start()

    # --- submission ------------------------------------------------------------------------

    def submit(self, texts: list[str]) -> Future:
        if not texts:
            raise ValueError("submit() needs at least one text")
        if not self.batching:
            return self._run_alone(texts)
        encodings = self.engine.tokenize(texts)
        request = _Request(future=Future(), size=len(texts), remaining=len(texts))
        items = [_Item(encoding, len(encoding), request, index) for index, encoding in enumerate(encodings)]
        with self._condition:
            if self._stopping:
                raise Overloaded("the service is shutting down")
            if len(self._queue) + len(items) > self.max_queue_texts:
                raise Overloaded(f"{len(self._queue)} texts are queued (limit {self.max_queue_texts})")
            self._queue.extend(items)
            self._condition.notify()
        return request.future

    def _run_alone(self, texts: list[str]) -> Future:
        """BATCHING=false: this request's texts only, in chunks of BATCH_MAX_TEXTS, one engine call at a time."""
        with self._condition:
            if self._stopping:
                raise Overloaded("the service is shutting down")
            if self._waiting_alone + len(texts) > self.max_queue_texts:
                raise Overloaded(f"{self._waiting_alone} texts are waiting (limit {self.max_queue_texts})")
            self._waiting_alone += len(texts)
        future: Future = Future()
        queued_at = time.perf_counter()
        try:
            with self._engine_lock:
                chunks = []
                for start in range(0, len(texts), self.max_batch_texts):
                    chunk = texts[start:start + self.max_batch_texts]
                    _observe_wait(queued_at, len(chunk))
                    chunks.append(self._infer(self.engine.tokenize(chunk)))
            future.set_result(np.concatenate(chunks))
        except Exception as error:  # handed to the caller through the future, like the batched path
            future.set_exception(error)
        finally:
            with self._condition:
                self._waiting_alone -= len(texts)
        return future

    # --- engine thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return  # stopping and drained
                batch = self._take_batch()
            self._run_batch(batch)

    def _take_batch(self) -> list[_Item]:
        """The oldest item, then the others closest to it in length while every limit allows."""
        oldest = self._queue[0]
        others = sorted(self._queue[1:], key=lambda item: abs(item.tokens - oldest.tokens))
        chosen, longest, real_tokens = [oldest], oldest.tokens, oldest.tokens
        for item in others:
            if len(chosen) >= self.max_batch_texts:
                break
            padded_tokens = max(longest, item.tokens) * (len(chosen) + 1)
            if padded_tokens > self.max_batch_tokens:
                continue
            if padded_tokens > (1 + self.max_padding) * (real_tokens + item.tokens):
                continue
            chosen.append(item)
            longest, real_tokens = max(longest, item.tokens), real_tokens + item.tokens
        taken = set(map(id, chosen))
        self._queue = [item for item in self._queue if id(item) not in taken]
        return sorted(chosen, key=lambda item: item.tokens)

    def _run_batch(self, batch: list[_Item]) -> None:
        now = time.perf_counter()
        for item in batch:
            if not item.request.started and now - item.queued_at > self.max_wait_seconds:
                _fail(item.request, Overloaded(f"queued for more than {self.max_wait_seconds:g} s"))
        batch = [item for item in batch if not item.request.failed]
        if not batch:
            return
        for item in batch:
            item.request.started = True
            metrics.QUEUE_WAIT.observe(now - item.queued_at)
        try:
            with self._engine_lock:
                scores = self._infer([item.encoding for item in batch])
        except Exception as error:  # an engine failure fails this batch's requests, not the service
            log.error("engine batch of %d texts failed: %s", len(batch), error)
            for item in batch:
                _fail(item.request, error)
            return
        for item, row in zip(batch, scores, strict=True):
            request = item.request
            if request.scores is None:
                request.scores = np.empty((request.size, len(row)), dtype=row.dtype)
            request.scores[item.index] = row
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.scores)

    def _infer(self, encodings: Sequence[Sized]) -> np.ndarray:
        started = time.perf_counter()
        scores = self.engine.predict_encoded(encodings)
        metrics.INFERENCE_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(encodings))
        if scores.shape[0] != len(encodings):
            raise RuntimeError(f"engine returned {scores.shape[0]} rows for {len(encodings)} texts")
        return scores

    # --- lifecycle -------------------------------------------------------------------------

    def queued_texts(self) -> int:
        with self._condition:
            return len(self._queue) + self._waiting_alone

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, stop the engine thread."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)


def _observe_wait(queued_at: float, count: int) -> None:
    wait = time.perf_counter() - queued_at
    for _ in range(count):
        metrics.QUEUE_WAIT.observe(wait)


def _fail(request: _Request, error: Exception) -> None:
    """The request's future carries the error; its other texts are skipped when their batch comes."""
    request.failed = True
    if not request.future.done():
        request.future.set_exception(error)
