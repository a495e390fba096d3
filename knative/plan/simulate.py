"""Discrete-event simulation of one Knative revision under a traffic shape.

What moves, and where each piece comes from:

- requests arrive at the times of the traffic shape; while the activator is in the path
  (scaled to zero, or spare capacity below target-burst-capacity) they go through it: it sends
  each to a ready pod where fewer than containerConcurrency of its own requests are in flight
  (round robin; it does not see requests that reached a pod directly), or holds it, first in
  first out, until a slot frees or a pod becomes ready (10,000 per activator, then 503:
  pkg/activator/net/throttler.go);
- otherwise they go straight to the ready pods, round robin (the ingress gateway's balancing),
  and queue-proxy admits containerConcurrency in flight plus 10 x containerConcurrency queued,
  then answers 503 (pkg/queue/breaker.go, sharedmain.buildBreaker);
- each pod serves as `pod.PodModel` says, in batches (`Pod`); a request that takes longer than
  the deadline counts as an error (504) but still used the pod;
- every second the autoscaler records the average concurrency (pods' and activator's), every 2 s
  it decides (`kpa.Decider`) and the reconciler sets the replicas (`kpa.PodAutoscaler`); a new
  pod is ready `ColdStart.seconds` after it is created; a removed pod stops taking requests at
  once and lives on while queue-proxy drains (30 s after its last request, the pod's cost).

Time moves in 1 s segments (cut where a pod becomes ready). Within a segment where no limit is
reached, requests are dealt round robin and each pod's departures are computed for the whole
segment at once (`_deal_segment`: a numpy running maximum, then every pod's batches together,
`batches.segment_batches`); where a limit is reached (a full pod, the activator holding
requests, a 503) the segment is replayed request by request (`_route_one`). Both give the same
result where both apply (tests check it).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from knative.plan import kpa
from knative.plan.annotations import Autoscaling
from knative.plan.batches import segment_batches
from knative.plan.pod import ColdStart, PodModel
from knative.plan.traffic import Traffic

ACTIVATOR_QUEUE_DEPTH = 10_000  # pkg/activator/net/throttler.go: breakerQueueDepth, per activator
QUEUE_PROXY_DEPTH_FACTOR = 10  # pkg/queue/sharedmain/main.go: queueDepth = 10 x containerConcurrency
DRAIN_SECONDS = 30.0  # pkg/queue/sharedmain/main.go: drainSleepDuration
OK, REJECTED = 0, 1


@dataclass
class Pod:
    """One pod's bottleneck, serving in batches: a request that arrives while a batch runs waits
    for the next one, which takes every request that arrived until it starts; the batch takes the
    sum of its requests' service times and all of them finish at its end."""

    number: int  # order of creation (ties in the activator's choice go to the oldest)
    created: float
    ready_at: float
    removed: float | None = None
    free_at: float = 0.0  # when its bottleneck has served everything it was given
    batch_start: float = 0.0  # when the open batch starts (the running batch's end)
    open: list = field(default_factory=list)  # requests in the open batch (not started, end not final)
    open_from_activator: int = 0  # of those, the ones the activator sent
    open_end: float = 0.0  # the open batch's end so far (grows as requests join)
    slots_since: float = 0.0  # ends before this time are forgotten (trimmed)
    ends: deque = field(default_factory=deque)  # completion times of requests in started batches, ascending
    activator_ends: deque = field(default_factory=deque)  # those the activator sent (its own count)

    def forget(self, now: float) -> None:
        """Drops the requests finished by `now`."""
        for ends in (self.ends, self.activator_ends):
            while ends and ends[0] <= now:
                ends.popleft()
        self.slots_since = max(self.slots_since, now)

    def in_flight(self, now: float) -> int:
        """Requests in the pod (queue-proxy's count, whoever sent them)."""
        self.forget(now)
        return len(self.ends) + len(self.open)

    def slot_time(self, limit: int) -> float:
        """Earliest time from `slots_since` on when the activator has fewer than `limit` of its
        own requests in flight at this pod (it does not see requests that came directly). While
        the open batch may still grow, its end is a lower bound: the slot time only moves later."""
        own = len(self.activator_ends) + self.open_from_activator
        if not limit or own < limit:
            return self.slots_since
        index = own - limit
        return self.activator_ends[index] if index < len(self.activator_ends) else self.open_end

    def end_of_life(self, horizon: float) -> float:
        if self.removed is None:
            return horizon
        if self.removed < self.ready_at:
            return self.removed  # stopped while starting
        return max(self.removed + DRAIN_SECONDS, self.ends[-1] if self.ends else 0.0)


@dataclass(frozen=True)
class Result:
    """Figures of one run. Latencies are seconds, by request in arrival order (NaN = rejected)."""

    settings: Autoscaling
    traffic_spec: str
    duration: float
    arrivals: np.ndarray
    latency: np.ndarray
    cold: np.ndarray  # arrived while no pod was ready: waited on a cold start
    proxied: np.ndarray  # went through the activator
    rejected: int  # 503: queue-proxy or activator queue full
    timed_out: int  # 504: longer than the deadline (annotations.Autoscaling.timeout_seconds)
    pod_seconds: float
    timeline: dict  # per second: ready, starting, terminating, desired, panic, proxy, concurrency
    wall_seconds: float

    @property
    def requests(self) -> int:
        return int(self.arrivals.size)

    def percentile(self, q: float) -> float:
        """Latency percentile over answered requests (s)."""
        answered = self.latency[~np.isnan(self.latency)]
        return float(np.percentile(answered, q)) if answered.size else math.nan

    @property
    def error_share(self) -> float:
        return (self.rejected + self.timed_out) / self.requests if self.requests else 0.0

    @property
    def cold_share(self) -> float:
        return float(self.cold.mean()) if self.requests else 0.0

    @property
    def proxied_share(self) -> float:
        return float(self.proxied.mean()) if self.requests else 0.0

    @property
    def max_pods(self) -> int:
        busy = np.asarray(self.timeline["ready"]) + np.asarray(self.timeline["starting"])
        return int(busy.max()) if busy.size else 0

    def figures(self) -> dict:
        return {
            "requests": self.requests,
            "p50_ms": 1000 * self.percentile(50),
            "p95_ms": 1000 * self.percentile(95),
            "p99_ms": 1000 * self.percentile(99),
            "max_ms": 1000 * float(np.nanmax(self.latency)) if self.requests else math.nan,
            "cold_start_share": self.cold_share,
            "rejected_503": self.rejected,
            "timed_out_504": self.timed_out,
            "error_share": self.error_share,
            "proxied_share": self.proxied_share,
            "max_pods": self.max_pods,
            "pod_seconds": self.pod_seconds,
        }


class Simulation:
    def __init__(self, traffic: Traffic, pod: PodModel, settings: Autoscaling, cold_start: ColdStart,
                 start: str = "auto", warm_pods: int | None = None, seed: int = 1, deal_segments: bool = True) -> None:
        self.deal_segments = deal_segments
        self.traffic = traffic
        self.pod_model = pod
        self.settings = settings
        self.cold_start = cold_start
        self.horizon = float(traffic.duration)
        self.arrival = traffic.arrivals
        count = self.arrival.size
        self.service = pod.service_times(count, np.random.default_rng(seed))
        self.end = np.full(count, np.nan)
        self.cold = np.zeros(count, dtype=bool)
        self.proxied = np.zeros(count, dtype=bool)
        self.status = np.zeros(count, dtype=np.int8)
        seconds = int(math.ceil(self.horizon)) + 2
        # Concurrency integrated over each second [k, k+1), through the pods or the activator.
        self.area = {False: np.zeros(seconds), True: np.zeros(seconds)}
        self.full = {False: np.zeros(seconds + 1), True: np.zeros(seconds + 1)}  # whole seconds, as differences
        self.running_full = {False: 0.0, True: 0.0}
        self.accounted_until = 0.0
        self.pending = {False: [], True: []}  # (start, end) of requests assigned one by one, not yet accounted
        self.backlog: deque[int] = deque()  # request indexes held by the activator
        self.numbers = itertools.count()
        self.starting: list[Pod] = []  # created, not ready yet
        self.ready: list[Pod] = []  # taking requests
        self.slots: list[tuple[float, int, Pod]] = []  # heap: when each ready pod can take one more
        self.retired: list[Pod] = []  # removed, still draining
        self.gone: list[Pod] = []
        self.rr = 0
        self.stable = kpa.WindowAverager(int(settings.window))
        self.panic = kpa.WindowAverager(settings.panic_window)
        self.activator = kpa.ActivatorStats()
        self.timeline = {key: [] for key in ("ready", "starting", "terminating", "desired", "panic", "proxy", "concurrency")}
        self._start(start, warm_pods)

    # --- set-up ----------------------------------------------------------------------------------

    def _start(self, start: str, warm_pods: int | None) -> None:
        s = self.settings
        if start == "auto":
            start = "warm" if (warm_pods or s.min_scale) else "zero"
        if start == "zero":
            self.pa = kpa.PodAutoscaler.scaled_to_zero(s)
            self.decider = kpa.Decider(s)
            self.desired, self.ebc = 0, kpa.initial_excess_burst_capacity(s)
        elif start == "warm":
            pods = warm_pods or max(s.min_scale, 1)
            for _ in range(pods):
                self._add_ready(Pod(next(self.numbers), created=0.0, ready_at=0.0))
            self.pa = kpa.PodAutoscaler.warm(s, pods)
            self.decider = kpa.Decider(s)
            self.desired = pods
            self.ebc = self.decider.excess_burst_capacity(pods, 0.0)
            self.pa.mode = kpa.SERVE if self.ebc >= 0 else kpa.PROXY
        elif start == "created":
            self.pa = kpa.PodAutoscaler.created(s)
            self.decider = kpa.Decider(s)
            self.desired, self.ebc = kpa.UNKNOWN_SCALE, kpa.initial_excess_burst_capacity(s)
            self._set_replicas(0.0, s.initial_scale)
        else:
            raise ValueError(f"start {start!r}: use auto, zero, warm or created")
        self.activator_limit = ACTIVATOR_QUEUE_DEPTH * kpa.activator_count(len(self.ready), s)

    # --- main loop ---------------------------------------------------------------------------------

    def run(self) -> Result:
        started = time.perf_counter()
        now, index = 0.0, 0
        second = 1
        while now < self.horizon:
            until = min([float(second)] + [p.ready_at for p in self.starting if p.ready_at < second])
            stop = int(np.searchsorted(self.arrival, until, side="left"))
            if stop > index and self._through_activator() and not self.activator.reporting:
                self._first_request(index)
            self._route(index, stop)
            index = stop
            self._drain_backlog(until)
            for pod in self.ready:
                self._settle(pod, until)
            now = until
            for pod in [p for p in self.starting if p.ready_at == now]:
                self._pod_ready(pod, now)
            if now == second:
                self._scrape(second)
                if second % int(kpa.TICK_SECONDS) == 0:
                    self._tick(now)
                second += 1
        for pod in self.ready:
            self._close_batch(pod)
        return self._result(time.perf_counter() - started)

    def _through_activator(self) -> bool:
        return self.pa.mode == kpa.PROXY or not self.ready

    def _first_request(self, index: int) -> None:
        """The activator reports a request at once when it had no entry for the revision, and the
        autoscaler ticks at once when the revision is at zero (MultiScaler.Poke)."""
        self.activator.first_request()
        at = float(self.arrival[index])
        self.stable.record(int(at), 1.0)
        self.panic.record(int(at), 1.0)
        if self.desired == 0:
            self._tick(at)

    # --- routing -----------------------------------------------------------------------------------

    def _route(self, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        through_activator = self._through_activator()
        if self.deal_segments and self.ready and not self.backlog and self._deal_segment(lo, hi, through_activator):
            return
        for i in range(lo, hi):
            self._route_one(i, through_activator)

    def _queue_proxy_limit(self) -> int:
        """Requests queue-proxy admits: containerConcurrency in flight plus 10 x as many queued
        (0 = no limit); past it, 503."""
        return self.settings.container_concurrency * (1 + QUEUE_PROXY_DEPTH_FACTOR)

    def _deal_segment(self, lo: int, hi: int, through_activator: bool) -> bool:
        """Round robin over the ready pods for requests lo..hi at once; False (nothing changed)
        when some request would find its pod full.

        Request lo + r * k + c goes to ready pod (rr + c) % k: laid out as a matrix of k columns,
        each column is one pod's arrivals in order. The bottleneck works without pause while it
        has work, in arrival order, so its departures as if it served one request at a time are a
        running maximum down the columns, D_i = C_i + max(free, max_{j<=i} (A_j - C_{j-1})), and
        each batch ends at the D of its last request (`batches.segment_batches`).
        """
        count, k = hi - lo, len(self.ready)
        rows = -(-count // k)
        pods = [self.ready[(self.rr + c) % k] for c in range(k)]
        # Padding after the last request: arrives with it and takes no time (results dropped).
        arrive = np.full(rows * k, self.arrival[hi - 1])
        arrive[:count] = self.arrival[lo:hi]
        service = np.zeros(rows * k)
        service[:count] = self.service[lo:hi]
        arrive, service = arrive.reshape(rows, k), service.reshape(rows, k)
        served = np.cumsum(service, axis=0)
        free = np.array([pod.free_at for pod in pods])
        done = served + np.maximum(np.maximum.accumulate(arrive - (served - service), axis=0), free)
        overlap = self.pod_model.overlap_seconds
        filled = np.where(np.arange(k) <= (count - 1) % k, rows, rows - 1)
        batches = segment_batches(arrive, done, filled, free, np.array([pod.batch_start for pod in pods]),
                                  np.array([bool(pod.open) for pod in pods]))
        ends = batches.ends + overlap  # the padding's: the column's last end, which keeps columns sorted
        carried = batches.carried_end + overlap
        limits = [([pod.ends for pod in pods], [(len(pod.open), end) for pod, end in zip(pods, carried)],
                   self._queue_proxy_limit())]
        if through_activator:
            limits.append(([pod.activator_ends for pod in pods],
                           [(pod.open_from_activator, end) for pod, end in zip(pods, carried)],
                           self.settings.container_concurrency))
        if not all(_below_limit(earlier, waiting, arrive, ends, count, limit)
                   for earlier, waiting, limit in limits if limit):
            return False
        self.proxied[lo:hi] = through_activator
        requests = (lo + np.arange(rows * k)).reshape(rows, k)
        columns = zip(pods, filled.tolist(), ends.T.tolist(), requests.T.tolist(), carried.tolist(),
                      batches.carried_open.tolist(), batches.open_from.tolist(), batches.batch_start.tolist(),
                      done[filled - 1, np.arange(k)].tolist())
        for pod, n, column_ends, column_requests, carried_end, carried_open, started, batch_start, free_at in columns:
            if n:
                self._commit_column(pod, column_ends[:n], column_requests[:n], carried_end, carried_open, started,
                                    batch_start, free_at, through_activator)
        # Requests whose batch started have their end (pod by pod, the order the accounting sums
        # them in); the others wait in the pods' open batches.
        started = (np.arange(rows)[:, None] < batches.open_from).T
        finished = requests.T[started]
        self.end[finished] = ends.T[started]
        self.rr = (self.rr + count) % k
        self._account(self.arrival[finished], self.end[finished], through_activator)
        return True

    def _commit_column(self, pod: Pod, ends: list[float], requests: list[int], carried_end: float, carried_open: bool,
                       started: int, batch_start: float, free_at: float, through_activator: bool) -> None:
        """Applies one pod's column of a dealt segment (`batches.SegmentBatches`, ends with the
        overlapping part): the first `started` requests are in batches that started."""
        if pod.open and not carried_open:
            pod.open_end = carried_end
            self._close_batch(pod)
        pod.ends.extend(ends[:started])
        if through_activator:
            pod.activator_ends.extend(ends[:started])
            pod.open_from_activator += len(requests) - started
        pod.open.extend(requests[started:])
        pod.free_at, pod.batch_start = free_at, batch_start
        if pod.open:
            pod.open_end = free_at + self.pod_model.overlap_seconds

    def _route_one(self, i: int, through_activator: bool) -> None:
        at = float(self.arrival[i])
        self._drain_backlog(at)
        self.cold[i] = not self.ready
        self.proxied[i] = through_activator
        if not through_activator:
            pod = self.ready[self.rr % len(self.ready)]
            self.rr = (self.rr + 1) % len(self.ready)
            self._admit(i, pod, at)
        elif self.backlog or not self._assign_to_free_pod(i, at):
            if len(self.backlog) >= self.activator_limit:
                self.status[i] = REJECTED
            else:
                self.backlog.append(i)

    def _assign_to_free_pod(self, i: int, at: float) -> bool:
        """The activator's round robin over ready pods where it has a free slot."""
        limit = self.settings.container_concurrency
        for step in range(len(self.ready)):
            pod = self.ready[(self.rr + step) % len(self.ready)]
            self._settle(pod, at)
            if pod.slot_time(limit) <= at:
                self.rr = (self.rr + step + 1) % len(self.ready)
                self._admit(i, pod, at)
                return True
        return False

    def _drain_backlog(self, until: float) -> None:
        """Requests held by the activator go, in order, to the first slot that frees.

        `slots` is a heap of (time a pod can take one more, pod number, pod), one entry per ready
        pod. A pod's slot time only moves later, so an entry older than its pod is found on top
        and refreshed; removed pods are dropped when they surface.
        """
        limit = self.settings.container_concurrency
        while self.backlog and self.slots:
            at, number, pod = self.slots[0]
            if pod.removed is not None:
                heapq.heappop(self.slots)
                continue
            current = pod.slot_time(limit)
            if current != at:
                heapq.heapreplace(self.slots, (current, number, pod))
                continue
            if at > until:
                return
            i = self.backlog.popleft()
            self._admit(i, pod, max(at, float(self.arrival[i])))
            heapq.heapreplace(self.slots, (pod.slot_time(limit), number, pod))

    def _admit(self, i: int, pod: Pod, at: float) -> None:
        """Queue-proxy takes the request, or answers 503 when its queue is full."""
        limit = self._queue_proxy_limit()
        self._settle(pod, at)
        if limit and pod.in_flight(at) >= limit:
            self.status[i] = REJECTED
        else:
            self._assign(i, pod, at)

    def _add_ready(self, pod: Pod) -> None:
        self.ready.append(pod)
        heapq.heappush(self.slots, (pod.slot_time(self.settings.container_concurrency), pod.number, pod))

    def _assign(self, i: int, pod: Pod, at: float) -> None:
        """Request i joins the pod's open batch, or starts alone when the pod is idle."""
        if at > pod.batch_start:  # the open batch (if any) has started
            self._close_batch(pod)
        if at > pod.free_at:  # idle: runs at once, alone
            pod.free_at = pod.batch_start = at + self.service[i]
            self._finish(i, pod, pod.free_at + self.pod_model.overlap_seconds)
            return
        pod.free_at += self.service[i]
        pod.open_end = pod.free_at + self.pod_model.overlap_seconds
        pod.open.append(i)
        pod.open_from_activator += bool(self.proxied[i])

    def _close_batch(self, pod: Pod) -> None:
        """The open batch starts: its end is final, and the next batch starts at that end."""
        for i in pod.open:
            self._finish(i, pod, pod.open_end)
        pod.open.clear()
        pod.open_from_activator = 0
        pod.batch_start = pod.free_at

    def _settle(self, pod: Pod, now: float) -> None:
        """Brings the pod to `now`: the open batch closes once it has started, finished requests go."""
        if pod.open and pod.batch_start < now:
            self._close_batch(pod)
        pod.forget(now)

    def _finish(self, i: int, pod: Pod, end: float) -> None:
        pod.ends.append(end)
        if self.proxied[i]:
            pod.activator_ends.append(end)
        self.end[i] = end
        self.pending[bool(self.proxied[i])].append((max(float(self.arrival[i]), self.accounted_until), end))

    # --- concurrency accounting -------------------------------------------------------------------

    def _account(self, starts: np.ndarray, ends: np.ndarray, proxied: bool) -> None:
        """Adds requests in the system over [start, end) to the per-second areas."""
        starts = np.maximum(starts, self.accounted_until)
        ends = np.minimum(ends, len(self.area[proxied]) - 1e-9)
        first, last = starts.astype(np.int64), ends.astype(np.int64)
        same = first == last
        area, full = self.area[proxied], self.full[proxied]
        _add(area, first[same], ends[same] - starts[same])
        apart = ~same
        _add(area, first[apart], first[apart] + 1 - starts[apart])
        _add(area, last[apart], ends[apart] - last[apart])
        _add(full, first[apart] + 1, np.ones(int(apart.sum())))
        _add(full, last[apart], -np.ones(int(apart.sum())))

    def _flush_pending(self) -> None:
        for proxied, intervals in self.pending.items():
            if intervals:
                starts, ends = np.array(intervals).T
                self._account(starts, ends, proxied)
                intervals.clear()

    def _concurrency(self, second: int, proxied: bool) -> float:
        """Average requests in the system over [second - 1, second)."""
        self.running_full[proxied] += self.full[proxied][second - 1]
        return self.area[proxied][second - 1] + self.running_full[proxied]

    # --- autoscaler ---------------------------------------------------------------------------------

    def _scrape(self, second: int) -> None:
        """Queue-proxy stats of the ready pods and the activator's report, recorded each second."""
        self._flush_pending()
        if self.backlog:  # held by the activator: in the system for the whole second so far
            held = self.arrival[np.fromiter(self.backlog, dtype=np.int64)]
            self.area[True][second - 1] += float(np.sum(second - np.maximum(held, second - 1)))
        for pod in self.ready:  # waiting for a batch that starts later: in the pod all second so far
            for i in pod.open:
                self.area[bool(self.proxied[i])][second - 1] += second - max(float(self.arrival[i]), second - 1.0)
        self.accounted_until = float(second)
        direct = self._concurrency(second, False)
        through_activator = self._concurrency(second, True)
        if self.ready:
            self.stable.record(second, direct)
            self.panic.record(second, direct)
        reported = self.activator.report(through_activator)
        if reported is not None:
            self.stable.record(second, reported)
            self.panic.record(second, reported)
        self._record_timeline(direct + through_activator)

    def _tick(self, now: float) -> None:
        second = int(now)
        scraping = self.settings.target_burst_capacity != -1
        if not (self.stable.is_empty(second) and scraping):
            result = self.decider.scale(now, len(self.ready), self.stable.average(second), self.panic.average(second))
            self.desired, self.ebc = result.desired, result.excess_burst_capacity
        replicas = self.pa.reconcile(now, self.desired, self.ebc, len(self.ready))
        self._set_replicas(now, replicas)
        self.activator_limit = ACTIVATOR_QUEUE_DEPTH * kpa.activator_count(len(self.ready), self.settings)

    def _set_replicas(self, now: float, replicas: int) -> None:
        alive = len(self.starting) + len(self.ready)
        for _ in range(replicas - alive):
            self.starting.append(Pod(next(self.numbers), created=now, ready_at=now + self.cold_start.seconds, slots_since=now))
        if replicas < alive:
            # ReplicaSet: pods not ready go first (newest first), then the most recently ready.
            victims = self.starting[::-1] + sorted(self.ready, key=lambda p: p.ready_at, reverse=True)
            for pod in victims[: alive - replicas]:
                pod.removed = now
                self._close_batch(pod)  # it takes no more requests: its open batch is complete
                (self.starting if pod in self.starting else self.ready).remove(pod)
                self.retired.append(pod)

    def _pod_ready(self, pod: Pod, now: float) -> None:
        self.starting.remove(pod)
        pod.slots_since = pod.free_at = pod.batch_start = now
        self._add_ready(pod)
        self._drain_backlog(now)
        # Endpoints changed: the reconciler runs (the Active condition may turn true).
        self._set_replicas(now, self.pa.reconcile(now, self.desired, self.ebc, len(self.ready)))

    # --- results ------------------------------------------------------------------------------------

    def _record_timeline(self, concurrency: float) -> None:
        now = self.accounted_until
        self.gone += [p for p in self.retired if p.end_of_life(math.inf) <= now]
        self.retired = [p for p in self.retired if p.end_of_life(math.inf) > now]
        row = self.timeline
        row["ready"].append(len(self.ready))
        row["starting"].append(len(self.starting))
        row["terminating"].append(len(self.retired))
        row["desired"].append(self.desired)
        row["panic"].append(self.decider.panic_since is not None)
        row["proxy"].append(self._through_activator())
        row["concurrency"].append(concurrency)

    def _result(self, wall_seconds: float) -> Result:
        latency = np.where(self.status == REJECTED, np.nan, self.end - self.arrival)
        answered = ~np.isnan(latency)
        timed_out = int(np.sum(latency[answered] > self.settings.timeout_seconds))
        pods = self.starting + self.ready + self.retired + self.gone
        pod_seconds = sum(min(p.end_of_life(self.horizon), self.horizon) - p.created for p in pods)
        return Result(
            settings=self.settings, traffic_spec=self.traffic.spec, duration=self.horizon, arrivals=self.arrival,
            latency=latency, cold=self.cold, proxied=self.proxied, rejected=int(np.sum(self.status == REJECTED)),
            timed_out=timed_out, pod_seconds=float(pod_seconds), timeline=self.timeline, wall_seconds=wall_seconds,
        )


def _below_limit(earlier: list[deque], waiting: list[tuple[int, float]], arrive: np.ndarray, ends: np.ndarray,
                 count: int, limit: int) -> bool:
    """Whether each of the first `count` requests (row-major) of a dealt segment finds fewer than
    `limit` in flight at its pod (column): `earlier` holds each column's requests in started
    batches before the segment, `waiting` how many wait in its open batch and when that batch
    ends, `ends` the segment's completion times."""
    held = np.array([len(e) + waits for e, (waits, _) in zip(earlier, waiting)])
    rows, k = arrive.shape
    if np.all(held + rows <= limit):
        return True  # cannot reach the limit even if nothing finished
    # In flight before request r of a column = held + r - (ends <= its arrival, earlier or this
    # segment's). Columns are laid end to end on one axis, `span` apart, so one searchsorted
    # counts within each column.
    base = min(float(arrive.min()), min((e[0] for e in earlier if e), default=np.inf))
    span = float(ends.max() - base + 1.0)
    keys = np.concatenate([np.concatenate([np.fromiter(e, dtype=float, count=len(e)), np.full(waits, end), ends[:, c]])
                           - base + c * span for c, (e, (waits, end)) in enumerate(zip(earlier, waiting))])
    offsets = np.concatenate([[0], np.cumsum(held + rows)[:-1]])
    finished = np.searchsorted(keys, arrive - base + np.arange(k) * span, side="right") - offsets
    in_flight = held + np.arange(rows)[:, None] - finished
    real = (np.arange(rows * k) < count).reshape(rows, k)
    return not np.any((in_flight >= limit) & real)


def _add(array: np.ndarray, index: np.ndarray, weights: np.ndarray) -> None:
    """array[index] += weights, repeated indexes summed."""
    if index.size == 0:
        return
    base = int(index.min())
    counts = np.bincount(index - base, weights=weights)
    array[base:base + counts.size] += counts


def simulate(traffic: Traffic, pod: PodModel, settings: Autoscaling, cold_start: ColdStart,
             start: str = "auto", warm_pods: int | None = None, seed: int = 1) -> Result:
    return Simulation(traffic, pod, settings, cold_start, start, warm_pods, seed).run()
