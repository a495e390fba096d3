"""The one object the HTTP layer talks to: cache in front of the batcher in front of the engine.

predict(texts): dedupe the request's texts; take what this worker holds in memory, then one
Redis round trip for the rest; compute only what is still missing, and write it back; answer
every input in order. A text that another request is already computing is not queued again:
the request waits for that computation and shares its result (single flight), so a text posted
by many clients at once costs one engine slot.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from model import metrics
from model.batcher import Batcher, Overloaded
from model.cache import CacheState, PredictionCache

if TYPE_CHECKING:
    from model.engines import Engine

log = logging.getLogger(__name__)

CacheStatus = Literal["hit", "miss", "partial", "bypass"]
Ranked = list[tuple[str, float]]  # every label with its score, highest first

__all__ = ["Prediction", "Predictor", "Overloaded"]


@dataclass(frozen=True)
class Prediction:
    scores: list[Ranked]  # per input text
    cache_status: CacheStatus


class Predictor:
    def __init__(self, engine: Engine, batcher: Batcher, cache: PredictionCache, model_string: str) -> None:
        self.engine = engine
        self.batcher = batcher
        self.cache = cache
        self.model_string = model_string
        self.labels: tuple[str, ...] = tuple(engine.labels)
        self._in_flight: dict[str, tuple[Future, int]] = {}  # text -> (its computation, its row there)
        self._in_flight_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> Predictor:
        """Load the engine the settings name and wire the cache and batcher around it (no warm-up)."""
        from model.engines import load_engine

        engine = load_engine(settings)
        resolved = engine.model
        batcher = Batcher(
            engine,
            max_batch_texts=settings.batch_max_texts,
            max_batch_tokens=settings.batch_max_tokens,
            max_queue_texts=settings.queue_max_texts,
            batching=settings.batching,
            max_padding=settings.batch_max_padding,
            max_wait_seconds=settings.queue_max_wait_seconds,
        )
        cache = PredictionCache(
            settings.redis_url,
            namespace=f"{resolved.fingerprint_sha256}|{engine.description}",
            label_count=len(engine.labels),
            ttl_seconds=settings.cache_ttl_seconds,
            key_prefix=settings.cache_key_prefix,
            timeout_seconds=settings.cache_timeout_seconds,
            retry_seconds=settings.cache_retry_seconds,
            local_texts=settings.cache_local_texts,
            local_seconds=settings.cache_local_seconds,
        )
        return cls(engine, batcher, cache, model_string=f"{resolved.model_id}@{resolved.fingerprint}")

    def warmup(self) -> None:
        """One engine batch before the service says ready; also learns whether Redis answers."""
        self.engine.warmup()
        state = self.cache.ping()
        if state == "unavailable":
            log.warning("redis is unreachable at start-up; serving uncached until it answers")

    def predict(self, texts: list[str], waited_seconds: float = 0.0) -> Prediction:
        """Scores of `texts`; `waited_seconds` the request spent waiting for a request thread,
        which admission counts like its wait in the queue (Batcher.submit)."""
        unique = list(dict.fromkeys(texts)) if len(texts) > 1 else texts
        rows = self.cache.get_local(unique)
        from_cache, status = len(rows), "hit"
        if len(rows) < len(unique):
            rest = [text for text in unique if text not in rows]
            fetched = self.cache.get_many(rest)
            if fetched is None:
                status = "bypass"
            else:
                found = {text: row for text, row in zip(rest, fetched) if row is not None}
                rows.update(found)
                from_cache += len(found)
            missing = [text for text in rest if text not in rows]
            if missing:
                self._compute(missing, rows, write_back=fetched is not None, waited_seconds=waited_seconds)
            if status == "hit":
                status = "miss" if from_cache == 0 else "partial" if len(missing) else "hit"
        if from_cache:
            metrics.TEXTS_FROM_CACHE.inc(from_cache)
        return Prediction(scores=[self._ranked(rows[text]) for text in texts], cache_status=status)

    def _compute(self, missing: list[str], rows: dict[str, np.ndarray], write_back: bool,
                 waited_seconds: float) -> None:
        """Rows of `missing` into `rows`: the texts no other request computes are submitted, the others shared."""
        with self._in_flight_lock:
            shared = {text: self._in_flight[text] for text in missing if text in self._in_flight}
            own = [text for text in missing if text not in shared]
            flight: Future = Future()
            for index, text in enumerate(own):
                self._in_flight[text] = (flight, index)
        try:
            if own:
                self._compute_own(own, flight, rows, write_back, waited_seconds)
            for text, (computation, index) in shared.items():
                rows[text] = computation.result()[index]
        finally:
            if own:
                with self._in_flight_lock:
                    for text in own:
                        if self._in_flight.get(text, (None,))[0] is flight:
                            del self._in_flight[text]
        if own:
            metrics.TEXTS_COMPUTED.inc(len(own))
        if shared:
            metrics.TEXTS_SHARED.inc(len(shared))

    def _compute_own(self, own: list[str], flight: Future, rows: dict[str, np.ndarray], write_back: bool,
                     waited_seconds: float) -> None:
        try:
            computed = self.batcher.submit(own, waited_seconds).result()
        except BaseException as error:  # the requests sharing this computation get the same answer
            flight.set_exception(error)
            raise
        flight.set_result(computed)
        new_rows = dict(zip(own, computed))
        rows.update(new_rows)
        if write_back:
            self.cache.set_many(new_rows)

    def _ranked(self, row: np.ndarray) -> Ranked:
        pairs = list(zip(self.labels, row.tolist()))
        pairs.sort(key=_score, reverse=True)
        return pairs

    def cache_state(self) -> CacheState:
        return self.cache.state()

    def close(self) -> None:
        """Finish queued work, then let go of Redis."""
        self.batcher.stop()
        self.cache.close()


def _score(pair: tuple[str, float]) -> float:
    return pair[1]
