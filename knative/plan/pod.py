"""One pod of the service as the profile measured it, and its cold start.

The pod is modelled as the two stations of the classic operational analysis of a server (a
delay station and one queueing station, Lazowska et al., "Quantitative System Performance",
ch. 5 and 6), both taken from the profile of one request shape:

- a bottleneck (the engine and the interpreter lock) that serves in batches, as the batcher
  does: a request that finds it idle runs at once; one that arrives while a batch runs waits
  for the next batch, which takes every request that arrived until it starts, runs for the sum
  of their service times, and finishes all of them at its end. Its mean service time is 1 / the
  throughput measured once it stopped growing with more requests in flight (the median of the
  saturated points);
- a constant time per request that overlaps with other requests' service (network, JSON,
  validation, tokenization on the request threads): the mean latency of a lone request minus
  that service time.

A request's service time is drawn from the latency distribution measured with one request in
flight (its quantiles, interpolated), less the overlapping part, so a lone request sees the
measured lone latency, the pod saturates at the measured throughput, and queueing between the
two follows from the batches (the simulation runs them: `batches.segment_batches`).
`closed_loop` predicts the profile's own curve (throughput and mean latency against requests
in flight, by mean value analysis: the batches change who waits, not how much work there is),
which the profile report prints beside the measurement as a check of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Quantile levels of a k6 latency summary: min, median, p90, p95, p99, max.
QUANTILE_LEVELS = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)
QUANTILE_KEYS = ("min", "p50", "p90", "p95", "p99", "max")
# A drawn service time is never below this share of the mean (a lone request faster than the
# overlapping part would otherwise get a service time of zero or less).
MIN_SERVICE_SHARE = 0.05
# Closed-loop throughputs within this share of the highest count as saturated.
SATURATION_SHARE = 0.95


class ProfileError(ValueError):
    """A profile that lacks what the pod model needs."""


@dataclass(frozen=True)
class PodModel:
    texts_per_request: int
    capacity_rps: float  # saturated requests/s (closed loop): 1 / mean service time of the bottleneck
    lone_latency: tuple[float, ...]  # seconds at QUANTILE_LEVELS, one request in flight
    overlap_seconds: float  # part of a lone request's latency not spent at the bottleneck

    @classmethod
    def from_profile(cls, profile: dict, texts_per_request: int = 1) -> PodModel:
        shape = profile.get("shapes", {}).get(str(texts_per_request))
        if not shape or not shape.get("points"):
            available = ", ".join(profile.get("shapes", {})) or "none"
            raise ProfileError(f"the profile has no {texts_per_request}-text measurements (shapes: {available})")
        points = shape["points"]
        lone = [p for p in points if p["in_flight"] == 1]
        if not lone:
            raise ProfileError(f"the {texts_per_request}-text profile has no point with one request in flight")
        capacity = saturated_throughput([p["requests_per_second"] for p in points])
        quantiles = tuple(lone[0]["latency_ms"][key] / 1000.0 for key in QUANTILE_KEYS)
        return cls.build(texts_per_request, capacity, quantiles)

    @classmethod
    def build(cls, texts_per_request: int, capacity_rps: float, lone_latency: tuple[float, ...]) -> PodModel:
        if capacity_rps <= 0 or any(b < a for a, b in zip(lone_latency, lone_latency[1:])):
            raise ProfileError("capacity must be positive and latency quantiles ascending")
        overlap = max(0.0, piecewise_mean(lone_latency) - 1.0 / capacity_rps)
        return cls(texts_per_request, capacity_rps, tuple(lone_latency), overlap)

    @property
    def mean_service(self) -> float:
        return 1.0 / self.capacity_rps

    def service_times(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Bottleneck service time of `count` requests (seconds)."""
        lone = np.interp(rng.random(count), QUANTILE_LEVELS, self.lone_latency)
        return np.maximum(lone - self.overlap_seconds, MIN_SERVICE_SHARE * self.mean_service)

    def closed_loop(self, in_flight: int) -> tuple[float, float]:
        """(requests/s, mean latency s) with `in_flight` clients that send again at once, by exact
        mean value analysis of the delay + queue network."""
        service = piecewise_mean(self.lone_latency) - self.overlap_seconds
        queue = 0.0
        throughput = latency = 0.0
        for clients in range(1, in_flight + 1):
            residence = service * (1.0 + queue)
            latency = self.overlap_seconds + residence
            throughput = clients / latency
            queue = throughput * residence
        return throughput, latency


def saturated_throughput(rates: list[float]) -> float:
    """The pod's capacity: the median of the closed-loop throughputs within SATURATION_SHARE of
    the highest (the points past the knee), so one lucky run does not set it."""
    best = max(rates)
    return float(np.median([rate for rate in rates if rate >= SATURATION_SHARE * best]))


def piecewise_mean(quantiles: tuple[float, ...]) -> float:
    """Mean of the distribution whose quantile function is linear between QUANTILE_LEVELS."""
    levels = np.asarray(QUANTILE_LEVELS)
    values = np.asarray(quantiles)
    return float(np.sum(np.diff(levels) * (values[1:] + values[:-1]) / 2))


@dataclass(frozen=True)
class ColdStart:
    """Time from a pod's creation to its first request: scheduling (scheduler, sandbox, sidecar
    and readiness probe), the image pull (skipped when the node has the image), process start to
    /ready as the profile measured it."""

    process_start_seconds: float
    scheduling_seconds: float = 1.0
    image_mb: float = 620.0
    pull_mb_per_second: float = 100.0
    image_cached: bool = False

    @property
    def pull_seconds(self) -> float:
        return 0.0 if self.image_cached else self.image_mb / self.pull_mb_per_second

    @property
    def seconds(self) -> float:
        return self.scheduling_seconds + self.pull_seconds + self.process_start_seconds

    def describe(self) -> str:
        pull = "image cached" if self.image_cached else f"pull {self.image_mb:g} MB at {self.pull_mb_per_second:g} MB/s = {self.pull_seconds:.1f} s"
        return (f"cold start {self.seconds:.1f} s = scheduling {self.scheduling_seconds:g} s + {pull}"
                f" + process start {self.process_start_seconds:.2f} s")
