"""Redis per-text prediction cache that never fails a request.

One entry per text: key = CACHE_KEY_PREFIX + sha256(model fingerprint | backend-precision |
text), value = the float32 probabilities packed little-endian, so a hit returns exactly the
scores that were computed. Reads are one MGET, writes one non-transactional pipeline of SET EX.

Redis down or frozen: every call has a short socket timeout (CACHE_TIMEOUT_SECONDS), no retry;
an error is counted, the request is served uncached, and Redis is skipped for
CACHE_RETRY_SECONDS (a circuit breaker) before the next call tries again on a fresh connection.
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

    def get_many(self, texts: list[str]) -> list[np.ndarray | None] | None:
        if self._client is None or not texts or not self._available():
            return None
        try:
            values = self._client.mget([self.key(text) for text in texts])
        except Exception as error:  # served uncached; the breaker keeps Redis out of the path for a while
            self._failed("get", error)
            return None
        self._succeeded()
        return [self._decode(value) for value in values]

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
