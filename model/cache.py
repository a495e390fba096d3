"""Redis per-text prediction cache that never fails a request.

One entry per text: key = CACHE_KEY_PREFIX + sha256(model fingerprint | backend-precision |
text), value = the float32 probabilities packed little-endian, so a hit returns exactly the
scores that were computed. Reads are one MGET, writes one non-transactional pipeline of SET EX.

Redis down or frozen: every call has a short socket timeout (CACHE_TIMEOUT_SECONDS), no retry;
an error is counted, the request is served uncached, and Redis is skipped for
CACHE_RETRY_SECONDS (a circuit breaker) before the next call tries again on a fresh connection.

In front of Redis, each worker keeps the rows it read from or wrote to Redis in memory
(CACHE_LOCAL_TEXTS rows of texts up to 1000 characters, each for CACHE_LOCAL_SECONDS, at most
CACHE_TTL_SECONDS): a text requested again soon, the common case of a hot cache, costs a dict
look-up instead of a Redis round trip. Only rows that Redis accepted or returned enter it, and
they are the scores computed for this model and precision, like every Redis entry. The oldest
rows leave first when it is full.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Literal

import numpy as np

from model import metrics

log = logging.getLogger(__name__)

CacheState = Literal["ok", "unavailable", "disabled"]
VALUE_DTYPE = np.dtype("<f4")
LOCAL_MAX_TEXT_CHARS = 1000  # longer texts are rarely repeated verbatim: they stay in Redis only


class PredictionCache:
    """`get_many` returns one row or None per text, or None as a whole when the cache is bypassed."""

    def __init__(
        self,
        url: str | None,
        namespace: str,
        label_count: int,
        ttl_seconds: int = 86400,
        key_prefix: str = "sentiment:",
        timeout_seconds: float = 0.05,
        retry_seconds: float = 2.0,
        local_texts: int = 4096,
        local_seconds: float = 60.0,
    ) -> None:
        self.namespace = namespace
        self.label_count = label_count
        self.ttl_seconds = ttl_seconds
        self.key_prefix = key_prefix
        self.retry_seconds = retry_seconds
        self._client = _connect(url, timeout_seconds) if url else None
        self._lock = threading.Lock()
        self._skip_until = 0.0  # monotonic time before which Redis is not called
        self._healthy = self._client is not None
        self._local = LocalRows(local_texts if self._client is not None else 0, min(local_seconds, ttl_seconds))

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def state(self) -> CacheState:
        if self._client is None:
            return "disabled"
        return "ok" if self._healthy else "unavailable"

    def key(self, text: str) -> str:
        digest = hashlib.sha256(f"{self.namespace}|{text}".encode("utf-8", "surrogatepass")).hexdigest()
        return self.key_prefix + digest

    def ping(self) -> CacheState:
        """Check Redis once (at start-up), so /ready reports a known state."""
        if self._client is not None and self._available():
            try:
                self._client.ping()
                self._succeeded()
            except Exception as error:  # any Redis or socket error means the same here: unavailable
                self._failed("ping", error)
        return self.state()

    def get_local(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The rows of these texts that this worker holds in memory (no Redis call)."""
        return self._local.get_many(texts)

    def get_many(self, texts: list[str]) -> list[np.ndarray | None] | None:
        """One MGET: a row or None per text, or None as a whole when Redis is disabled or did not answer."""
        if self._client is None or not texts or not self._available():
            return None
        try:
            values = self._client.mget([self.key(text) for text in texts])
        except Exception as error:  # served uncached; the breaker keeps Redis out of the path for a while
            self._failed("get", error)
            return None
        self._succeeded()
        rows = [self._decode(value) for value in values]
        self._local.put_many((text, row) for text, row in zip(texts, rows) if row is not None)
        return rows

    def set_many(self, rows: dict[str, np.ndarray]) -> bool:
        if self._client is None or not rows or not self._available():
            return False
        try:
            pipe = self._client.pipeline(transaction=False)
            for text, scores in rows.items():
                pipe.set(self.key(text), np.asarray(scores, dtype=VALUE_DTYPE).tobytes(), ex=self.ttl_seconds)
            pipe.execute()
        except Exception as error:  # a lost write only costs a recomputation later
            self._failed("set", error)
            return False
        self._succeeded()
        self._local.put_many(rows.items())
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # --- circuit breaker -------------------------------------------------------------------

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _succeeded(self) -> None:
        if not self._healthy:
            log.info("redis is reachable again; cache back in use")
        self._healthy = True

    def _failed(self, operation: str, error: Exception) -> None:
        if operation in ("get", "set"):
            metrics.CACHE_ERRORS.labels(operation=operation).inc()
        with self._lock:
            if self._healthy:
                log.warning("redis %s failed (%s: %s); serving uncached, retrying in %.1f s",
                            operation, type(error).__name__, error, self.retry_seconds)
            self._healthy = False
            self._skip_until = time.monotonic() + self.retry_seconds

    def _decode(self, value: bytes | None) -> np.ndarray | None:
        if value is None or len(value) != self.label_count * VALUE_DTYPE.itemsize:
            return None  # absent, or written by something else: recompute
        return np.frombuffer(value, dtype=VALUE_DTYPE)


def _connect(url: str, timeout_seconds: float):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),  # one try: the breaker, not the client, decides when to retry
        health_check_interval=0,
    )


class LocalRows:
    """A bounded, expiring map of text -> row in this process; the oldest entries leave first.

    Reads take no lock (a dict look-up is atomic in CPython); writes and evictions do.
    """

    def __init__(self, capacity: int, lifetime_seconds: float) -> None:
        self.capacity = capacity
        self.lifetime_seconds = lifetime_seconds
        self._rows: dict[str, tuple[float, np.ndarray]] = {}  # text -> (expires at, row), oldest first
        self._lock = threading.Lock()

    def get_many(self, texts: list[str]) -> dict[str, np.ndarray]:
        if not self._rows:
            return {}
        now = time.monotonic()
        found = {}
        for text in texts:
            entry = self._rows.get(text)
            if entry is not None and entry[0] > now:
                found[text] = entry[1]
        return found

    def put_many(self, rows) -> None:
        if self.capacity <= 0:
            return
        expires_at = time.monotonic() + self.lifetime_seconds
        with self._lock:
            for text, row in rows:
                if len(text) <= LOCAL_MAX_TEXT_CHARS:
                    self._rows.pop(text, None)  # re-inserted at the end: it leaves last
                    self._rows[text] = (expires_at, row)
            while len(self._rows) > self.capacity:
                del self._rows[next(iter(self._rows))]
