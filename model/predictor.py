"""The one object the HTTP layer talks to: cache in front of the batcher in front of the engine.

predict(texts): dedupe the request's texts, one cache round trip for all of them, submit only
the missing ones to the batcher, write the new results back, answer every input in order.
"""

from __future__ import annotations

import logging
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

__all__ = ["Prediction", "Predictor", "Overloaded"]


@dataclass(frozen=True)
class Prediction:
    scores: list[list[tuple[str, float]]]  # per input text: every label, highest score first
    cache_status: CacheStatus


class Predictor:
    def __init__(self, engine: Engine, batcher: Batcher, cache: PredictionCache, model_string: str) -> None:
        self.engine = engine
        self.batcher = batcher
        self.cache = cache
        self.model_string = model_string
        self.labels: tuple[str, ...] = tuple(engine.labels)

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
        )
        return cls(engine, batcher, cache, model_string=f"{resolved.model_id}@{resolved.fingerprint}")

    def warmup(self) -> None:
        """One engine batch before the service says ready; also learns whether Redis answers."""
        self.engine.warmup()
        state = self.cache.ping()
        if state == "unavailable":
            log.warning("redis is unreachable at start-up; serving uncached until it answers")

    def predict(self, texts: list[str]) -> Prediction:
        unique = list(dict.fromkeys(texts))
        cached = self.cache.get_many(unique)
        rows: dict[str, np.ndarray] = {}
        if cached is not None:
            rows = {text: row for text, row in zip(unique, cached) if row is not None}
        missing = [text for text in unique if text not in rows]
        if missing:
            computed = self.batcher.submit(missing).result()
            new_rows = dict(zip(missing, computed))
            rows.update(new_rows)
            if cached is not None:
                self.cache.set_many(new_rows)
        metrics.TEXTS.labels(source="cache").inc(len(unique) - len(missing))
        metrics.TEXTS.labels(source="computed").inc(len(missing))
        return Prediction(
            scores=[self._ranked(rows[text]) for text in texts],
            cache_status=_cache_status(cached is not None, hits=len(unique) - len(missing), total=len(unique)),
        )

    def _ranked(self, row: np.ndarray) -> list[tuple[str, float]]:
        pairs = [(label, float(score)) for label, score in zip(self.labels, row)]
        return sorted(pairs, key=lambda pair: pair[1], reverse=True)

    def cache_state(self) -> CacheState:
        return self.cache.state()

    def close(self) -> None:
        """Finish queued work, then let go of Redis."""
        self.batcher.stop()
        self.cache.close()


def _cache_status(cache_used: bool, hits: int, total: int) -> CacheStatus:
    if not cache_used:
        return "bypass"
    if hits == total:
        return "hit"
    return "miss" if hits == 0 else "partial"
