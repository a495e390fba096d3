"""Every Prometheus metric of the service, in one place so the names stay consistent.

With more than one Gunicorn worker, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before
this module (and prometheus_client) is first imported; the gauges' `multiprocess_mode` says
how the workers' values combine on /metrics.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ENGINE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

HTTP_REQUEST_DURATION = Histogram(
    "sentiment_http_request_duration_seconds",
    "Time from request received to response returned, by route template, method and status.",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "sentiment_http_requests_in_flight",
    "HTTP requests being served right now.",
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "sentiment_batch_size_texts",
    "Texts per engine batch.",
    buckets=BATCH_SIZE_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "sentiment_queue_wait_seconds",
    "Time a text waits between its request's arrival (for a request thread, then in the queue) and the start of its engine batch.",
    buckets=ENGINE_BUCKETS,
)
INFERENCE_DURATION = Histogram(
    "sentiment_inference_duration_seconds",
    "Engine time per batch (pad, run the model, softmax; texts are tokenized on submission).",
    buckets=ENGINE_BUCKETS,
)
TEXTS = Counter(
    "sentiment_texts_total",
    "Distinct texts of each request, by where their scores came from: the cache, computed for this "
    "request, or shared with another request that was computing the same text.",
    ["source"],
)
CACHE_ERRORS = Counter(
    "sentiment_cache_errors_total",
    "Redis calls that failed or timed out (the request was then served uncached).",
    ["operation"],
)
STARTUP_SECONDS = Gauge(
    "sentiment_startup_seconds",
    "Start-up phases in seconds; ready = from process start to the first ready answer possible.",
    ["phase"],
    multiprocess_mode="livemax",
)
BUILD_INFO = Gauge(
    "sentiment_build_info",
    "Always 1; the labels say what is served, and isa the CPU instruction set of the int8 kernels.",
    ["model", "revision", "backend", "precision", "k_revision", "isa"],
    multiprocess_mode="livemax",
)

# The label sets known up front, bound once (a label look-up on every request costs more than
# the increment) and shown as 0 before first use.
TEXTS_FROM_CACHE = TEXTS.labels(source="cache")
TEXTS_COMPUTED = TEXTS.labels(source="computed")
TEXTS_SHARED = TEXTS.labels(source="shared")
for _operation in ("get", "set"):
    CACHE_ERRORS.labels(operation=_operation)


class RequestDurations:
    """HTTP_REQUEST_DURATION's children by (route, method, status), each looked up once."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, int], object] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        child = self._children.get((route, method, status))
        if child is None:
            child = HTTP_REQUEST_DURATION.labels(route=route, method=method, status=str(status))
            self._children[(route, method, status)] = child
        child.observe(seconds)


HTTP_DURATIONS = RequestDurations()


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type; merges the workers' files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
