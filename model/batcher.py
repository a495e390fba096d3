"""Continuous cross-request dynamic batching in front of one engine.

Each submitted text is tokenized once, in submit(): the token counts form the batches and the
same encodings go to the engine. One engine thread runs batches back to back. When it is idle,
a submission starts at once (no added wait at low load). While a batch runs, new texts queue;
the next batch takes the oldest queued text plus the queued texts closest to it in length.
Every text of a batch is padded to the longest, and padding is compute spent for nothing, while
each engine call also has a fixed cost: how many texts to take is decided by the engine's own
cost model (model/batch_cost.py, fitted on the batches it runs), which picks the batch with the
most real tokens per second, within BATCH_MAX_TEXTS and BATCH_MAX_TOKENS (padded tokens =
texts x longest). Until the model has seen enough batch shapes, a text joins only while the
padding stays within BATCH_MAX_PADDING of the real tokens. The oldest text always goes next, so
a long text cannot starve.
A request's texts may be spread over several batches; its future resolves once all are scored.

Admission keeps the queue-wait promise: a submission is refused at once (Overloaded) when the
queue is full, or when it would wait longer than PLANNED_SHARE of QUEUE_MAX_WAIT_SECONDS: the
time its request waited for a request thread while all were busy (told by the Gunicorn worker,
model/worker.py), then the rest of the running batch, then the queued tokens, at the real tokens
per second of the engine thread's recent batches. Each batch is timed over the engine thread's
whole turn, not only the engine call: under load the thread also waits for the GIL among the
request threads, and a pace without that wait admits texts that are shed later. Batch order
keeps what admission planned: a newer text joins a batch ahead of older ones only while each of
them still starts within that planned share. The rest of the limit absorbs the pace's own
variation. With nothing queued a request is always admitted, so an idle service serves any
request within the limits. A request none of whose texts has started after
QUEUE_MAX_WAIT_SECONDS still fails with Overloaded instead of being computed for a client that
has likely given up (after a stall of the node, say). The limit is on waiting for others: once a
request's first batch has started, the rest of its texts are computed, however long its own
batches take (a retry would take as long, so shedding it would refuse it forever).

With BATCHING=false each request runs alone (the naive configuration, for comparison), still
one engine call at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence, Sized
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model import metrics
from model.batch_cost import BatchCost

if TYPE_CHECKING:
    from model.engines import Engine

log = logging.getLogger(__name__)

TIE = 1e-9  # relative difference in predicted tokens per second below which two batches are equal
# Of QUEUE_MAX_WAIT_SECONDS, the share admission and batch order plan for. Under load the engine
# thread's pace varies from one queue's worth of batches to the next: planning for the whole limit,
# or 90% of it, still let texts start after the limit, to be shed after waiting (docs/performance.md).
PLANNED_SHARE = 0.8


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
    queued_at: float  # time.perf_counter() at submission, less its request's wait for a thread


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
        self.planned_wait_seconds = max_wait_seconds * PLANNED_SHARE
        self.max_queue_texts = max_queue_texts
        self.batching = batching
        self._queue: list[_Item] = []
        self._queued_tokens = 0  # real tokens of the queued texts
        self.cost = BatchCost()
        self._running_until = 0.0  # perf_counter time the running batch is predicted to end
        self._waiting_alone = 0  # texts waiting for the engine lock (batching off)
        self._condition = threading.Condition()
        self._engine_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        if batching:
            self._thread = threading.Thread(target=self._run, name="engine-batcher", daemon=True)
            self._thread.start()

    # --- submission ------------------------------------------------------------------------

    def submit(self, texts: list[str], waited_seconds: float = 0.0) -> Future:
        """`waited_seconds`: how long the request waited for a request thread before it was read,
        which counts against QUEUE_MAX_WAIT_SECONDS like its wait here."""
        if not texts:
            raise ValueError("submit() needs at least one text")
        if not self.batching:
            return self._run_alone(texts)
        encodings = self.engine.tokenize(texts)
        request = _Request(future=Future(), size=len(texts), remaining=len(texts))
        waited_seconds = max(0.0, waited_seconds)
        waiting_since = time.perf_counter() - waited_seconds
        items = [_Item(encoding, len(encoding), request, index, waiting_since) for index, encoding in enumerate(encodings)]
        with self._condition:
            if self._stopping:
                raise Overloaded("the service is shutting down")
            if len(self._queue) + len(items) > self.max_queue_texts:
                raise Overloaded(f"{len(self._queue)} texts are queued (limit {self.max_queue_texts})")
            self._admit_by_predicted_wait(waited_seconds)
            self._queue.extend(items)
            self._queued_tokens += sum(item.tokens for item in items)
            self._condition.notify()
        return request.future

    def _admit_by_predicted_wait(self, waited: float) -> None:
        """Refuse now what would be shed later: the wait predicted for a text submitted now, after
        the `waited` seconds it already spent waiting for a request thread."""
        if not self._queue:
            return  # nothing ahead: whatever its size, the request starts with the next batch
        predicted = self._predicted_wait()
        if predicted is not None and waited + predicted > self.planned_wait_seconds:
            raise Overloaded(f"the queued texts need about {predicted:.2f} s of engine time after {waited:.2f} s "
                             f"waiting for a request thread (admitted up to {self.planned_wait_seconds:g} s of the "
                             f"{self.max_wait_seconds:g} s limit)")

    def _predicted_wait(self) -> float | None:
        """Seconds until a text submitted now could start: the running batch's rest, then the queued
        tokens at the pace the engine thread has kept on its recent batches."""
        pace = self.cost.tokens_per_second()
        if pace is None:
            return None
        return max(0.0, self._running_until - time.perf_counter()) + self._queued_tokens / pace

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
        turn_started = None  # when the previous turn ended, if work was waiting for this one
        while True:
            with self._condition:  # taking the lock among the request threads is part of the turn
                if not self._queue:
                    turn_started = None
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return  # stopping and drained
                batch = self._take_batch()
                turn_started = turn_started or time.perf_counter()
                self._running_until = turn_started + self._predicted_seconds(batch)
            self._run_batch(batch, turn_started)
            self._running_until = 0.0
            turn_started = time.perf_counter()

    def _predicted_seconds(self, batch: list[_Item]) -> float:
        pace = self.cost.tokens_per_second()
        return sum(item.tokens for item in batch) / pace if pace else 0.0

    def _take_batch(self) -> list[_Item]:
        """The oldest item, then the others closest to it in length, as many as pay off (see module doc)."""
        oldest = self._queue[0]
        others = sorted(self._queue[1:], key=lambda item: abs(item.tokens - oldest.tokens))
        others = self._not_delaying_older(others)
        chosen = self._best_prefix(oldest, others) if self.cost.fitted else self._within_padding(oldest, others)
        taken = set(map(id, chosen))
        self._queue = [item for item in self._queue if id(item) not in taken]
        self._queued_tokens -= sum(item.tokens for item in chosen)
        return sorted(chosen, key=lambda item: item.tokens)

    def _not_delaying_older(self, others: list[_Item]) -> list[_Item]:
        """The candidates, in order, that may join the oldest's batch without making an older text late.

        Admission planned each text's wait from the tokens queued ahead of it. A newer text taken
        now delays every older text left in the queue by its own tokens, which each of them can
        absorb only up to its slack: the tokens the engine scores, at its pace, between when that
        text's turn is due on the queue as it stands and its planned start. Joining by length
        alone, newer texts of the oldest's length would pass a text of another length batch
        after batch, and it would be shed although admission predicted it in time.
        """
        pace = self.cost.tokens_per_second()
        if pace is None:
            return others
        tokens = np.array([item.tokens for item in self._queue])
        planned_start = np.array([item.queued_at for item in self._queue]) + self.planned_wait_seconds
        slack = (planned_start - time.perf_counter()) * pace - (np.cumsum(tokens) - tokens)  # < 0: none to spare
        slack[0] = np.inf  # the oldest goes in this batch
        position = {id(item): index for index, item in enumerate(self._queue)}
        joining = []
        for item in others:
            index = position[id(item)]
            if slack[:index].min() < item.tokens:
                continue
            slack[:index] -= item.tokens
            slack[index] = np.inf
            joining.append(item)
            if len(joining) >= self.max_batch_texts - 1:
                break
        return joining

    def _best_prefix(self, oldest: _Item, others: list[_Item]) -> list[_Item]:
        """Of the oldest plus its nearest neighbours, the count with the most real tokens per second."""
        best_count, best_rate = 1, oldest.tokens / self.cost.seconds(1, oldest.tokens)
        longest, real_tokens = oldest.tokens, oldest.tokens
        for count, item in enumerate(others[:self.max_batch_texts - 1], start=2):
            longest, real_tokens = max(longest, item.tokens), real_tokens + item.tokens
            if longest * count > self.max_batch_tokens:
                break  # padded tokens only grow with the count: every larger batch is over too
            rate = real_tokens / self.cost.seconds(count, longest)
            if rate >= best_rate * (1 - TIE):  # a tie goes to the larger batch: the queue drains sooner
                best_count, best_rate = count, rate
        return [oldest, *others[:best_count - 1]]

    def _within_padding(self, oldest: _Item, others: list[_Item]) -> list[_Item]:
        """Before the cost model is fitted: neighbours join while the padding stays within BATCH_MAX_PADDING."""
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
        return chosen

    def _run_batch(self, batch: list[_Item], turn_started: float) -> None:
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
        turn_seconds = time.perf_counter() - turn_started
        self.cost.observe(len(batch), batch[-1].tokens, sum(item.tokens for item in batch), turn_seconds)

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
