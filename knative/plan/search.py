"""Search the annotation space for the cheapest settings that meet an SLO on a traffic shape.

Cheapest = fewest pod-seconds (pods from creation to the end of their drain, the cost a cluster
pays). The SLO is a p99 latency over every request of the run and an error budget (share of
503 + 504). The search is coordinate descent over a grid of values per setting, starting from
the current settings, and again from the current settings aimed at the requests in flight that
fill a pod (`Search.starts`): each pass tries every value of one setting with the others held,
keeps the best, and moves to the next setting, until a pass changes nothing. A descent that
stops there can miss what only two settings moved together buy (more warm pods and an earlier
scale-up, say: each alone costs more or misses the SLO), so it then tries pairs of moves
(`Search.pair_moves`): one that saves pod-seconds but misses the SLO alone, with one of another
setting that shortens the tail; where a pair wins, the descent goes on from it. Every candidate is
simulated on the same arrivals and service times (same seed), so candidates differ only by
their settings; the candidates of one step are simulated side by side, one process per CPU.
Between candidates whose pod-seconds are within TIE_SHARE of each other, the lower p99 wins,
then the current value: a value that buys nothing is left as it was. Meeting the SLO means
meeting it on the search's draw of the traffic and on the other draws (`checks`: other seeds,
run only for settings that meet it on the first), so one lucky draw of arrivals is not
recommended; between settings that miss, the one that misses by less wins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from knative.plan.annotations import Autoscaling, describe
from knative.plan.pod import ColdStart, PodModel, piecewise_mean
from knative.plan.simulate import Result, simulate
from knative.plan.traffic import Traffic

TIE_SHARE = 0.01
MAX_PASSES = 6  # passes of one descent, counting those that go on after a pair move
MAX_PAIRS = 48  # pair moves tried where a descent stops: the biggest savings first

# Values tried for each setting (Autoscaling field). containerConcurrency is added from the
# profile (the pod's request threads) and max-scale from the traffic's peak.
GRID = {
    "target_utilization": (0.6, 0.7, 0.8, 0.9, 1.0),
    "target": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0),
    "panic_threshold_percentage": (150.0, 200.0, 300.0, 400.0),
    "panic_window_percentage": (5.0, 10.0, 20.0),
    "window": (30.0, 60.0, 120.0),
    "scale_down_delay": (0.0, 15.0, 30.0, 60.0, 120.0, 300.0),
    "target_burst_capacity": (0.0, 32.0, 64.0, 128.0, 211.0, -1.0),
    "min_scale": (0, 1, 2, 3, 4),
    "activation_scale": (0, 2, 3, 4, 5, 6, 8),
    "scale_to_zero_pod_retention": (0.0, 60.0, 120.0, 300.0),
}


def _grid_order(value):
    """Ascending, with target None (unset) first and target-burst-capacity -1 (unlimited) last."""
    if value is None:
        return -math.inf
    return math.inf if value == -1 else value


@dataclass(frozen=True)
class Slo:
    p99_ms: float
    error_budget: float  # share of requests

    def met(self, result: Result) -> bool:
        return 1000 * result.percentile(99) <= self.p99_ms and result.error_share <= self.error_budget

    def violation(self, result: Result) -> float:
        """How far a result misses: relative p99 excess plus relative error excess."""
        p99 = 1000 * result.percentile(99)
        latency = max(0.0, p99 / self.p99_ms - 1) if not math.isnan(p99) else math.inf
        errors = max(0.0, result.error_share - self.error_budget) / max(self.error_budget, 1e-6)
        return latency + errors

    def describe(self) -> str:
        return f"p99 <= {self.p99_ms:g} ms, errors (503 + 504) <= {100 * self.error_budget:g}%"


@dataclass
class Search:
    traffic: Traffic
    pod: PodModel
    cold_start: ColdStart
    slo: Slo
    current: Autoscaling
    max_threads: int  # request threads of the pod: the highest useful containerConcurrency
    seed: int = 1
    checks: tuple[tuple[Traffic, int], ...] = ()  # other draws (traffic, seed) a new best must also pass
    say: Callable[[str], None] = print
    workers: int = 1  # processes that simulate side by side
    results: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)
    pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Search:
        return self

    def __exit__(self, *_) -> None:
        if self.pool:
            self.pool.shutdown()
            self.pool = None

    def simulate_all(self, jobs: list[tuple[Autoscaling, int]]) -> list[Result]:
        """Runs (settings, draw) jobs, draw 0 being the search's and 1.. the checks, side by side
        when there are workers (the same figures as one by one: each run is deterministic)."""
        draws = ((self.traffic, self.seed), *self.checks)
        if self.workers < 2 or len(jobs) < 2:
            return [simulate(draws[d][0], self.pod, s, self.cold_start, seed=draws[d][1]) for s, d in jobs]
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.workers, initializer=_start_worker,
                                            initargs=(draws, self.pod, self.cold_start))
        # Arrivals come back as copies: point every result at the one array of its draw.
        return [dataclasses.replace(result, arrivals=draws[d][0].arrivals)
                for result, (_, d) in zip(self.pool.map(_simulate_in_worker, jobs), jobs)]

    def prefetch(self, candidates: list[Autoscaling]) -> None:
        """Simulates on the search's draw, side by side, the valid candidates not run yet."""
        todo = [c for c in dict.fromkeys(candidates) if c not in self.results and self.valid(c)]
        for settings, result in zip(todo, self.simulate_all([(c, 0) for c in todo])):
            self.results[settings] = result

    def run(self, settings: Autoscaling) -> Result:
        if settings not in self.results:
            self.prefetch([settings])
        return self.results[settings]

    def check(self, settings: Autoscaling) -> list[Result]:
        """The settings run on each of the other draws."""
        if settings not in self.checked:
            self.checked[settings] = self.simulate_all([(settings, d) for d in range(1, len(self.checks) + 1)])
        return self.checked[settings]

    def met(self, settings: Autoscaling) -> bool:
        """Meets the SLO on the search's draw and on every other draw."""
        return self.slo.met(self.run(settings)) and all(self.slo.met(r) for r in self.check(settings))

    def violation(self, settings: Autoscaling) -> float:
        """How far it misses: on the search's draw, or, where that one meets, the worst other draw."""
        first = self.run(settings)
        if not self.slo.met(first):
            return self.slo.violation(first)
        return max((self.slo.violation(r) for r in self.check(settings)), default=0.0)

    def better(self, a: Autoscaling, b: Autoscaling, name: str) -> bool:
        """Whether `a` beats `b` (they differ in setting `name`)."""
        ra, rb = self.run(a), self.run(b)
        if rb.pod_seconds < ra.pod_seconds * (1 - TIE_SHARE) and self.met(b):
            return False  # costs more than settings that meet the SLO: no need to check its other draws
        met_a, met_b = self.met(a), self.met(b)
        if met_a != met_b:
            return met_a
        if not met_a:
            return self.violation(a) < self.violation(b) * (1 - 1e-9)
        if ra.pod_seconds < rb.pod_seconds * (1 - TIE_SHARE):
            return True
        if rb.pod_seconds < ra.pod_seconds * (1 - TIE_SHARE):
            return False
        p99_a, p99_b = ra.percentile(99), rb.percentile(99)
        if abs(p99_a - p99_b) > 0.02 * max(p99_a, p99_b):
            return p99_a < p99_b
        return getattr(a, name) == getattr(self.current, name)

    def grid(self) -> dict[str, tuple]:
        """The values tried per setting; the current value is always one of them."""
        peak_pods = math.ceil(self.traffic.peak_rate() / self.pod.capacity_rps)
        max_scales = (0, *(n for n in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 50, 64, 80, 100)
                           if peak_pods <= n <= 4 * peak_pods + 4))
        threads = self.max_threads
        concurrencies = (0, max(1, threads // 4), max(1, threads // 2), threads)
        # Utilization first: from a start that misses the SLO, headroom is the one-setting move
        # most likely to meet it; a move that only misses by less can lead far away.
        grid = {**GRID, "container_concurrency": concurrencies, "max_scale": max_scales}
        return {name: tuple(sorted({*values, getattr(self.current, name)}, key=_grid_order))
                for name, values in grid.items()}

    def valid(self, settings: Autoscaling) -> bool:
        s = settings
        if s.max_scale and (s.min_scale > s.max_scale or s.activation_scale > s.max_scale):
            return False
        try:
            s.validate()
        except ValueError:
            return False
        return True

    def starts(self) -> list[Autoscaling]:
        """Where descents start: the current settings, and the same aiming each pod at the requests
        in flight that fill it (Little's law: capacity x lone latency), which the current target
        may be far from."""
        fill = float(max(1, round(self.pod.capacity_rps * piecewise_mean(self.pod.lone_latency))))
        filled = self.current.replace(target=fill)
        return [self.current] if filled == self.current or not self.valid(filled) else [self.current, filled]

    def best(self) -> Autoscaling:
        """The best of a coordinate descent from each start (one descent can stop in a local optimum)."""
        ends = [self.descend(start) for start in self.starts()]
        best = ends[0]
        for end in ends[1:]:
            if self.better(end, best, "target"):
                best = end
        return best

    def descend(self, best: Autoscaling) -> Autoscaling:
        """Passes over the settings, each value with the others held; where a pass changes nothing,
        a pair move (`pair_move`) may let the descent go on."""
        self.say(f"  from {describe(best)}:")
        self.run(best)
        for number in range(1, MAX_PASSES + 1):
            before = best
            for name, values in self.grid().items():
                self.prefetch([best.replace(**{name: value}) for value in values])
                for value in values:
                    candidate = best.replace(**{name: value})
                    if candidate != best and self.valid(candidate) and self.better(candidate, best, name):
                        best = candidate
            moved = "" if best != before else "; no one setting does better"
            if best == before:
                best = self.pair_move(best)
                moved += ", a pair of settings does" if best != before else ", nor a pair"
            result = self.run(best)
            self.say(f"  pass {number}: {len(self.results)} settings simulated; best so far p99"
                     f" {1000 * result.percentile(99):.0f} ms, errors {100 * result.error_share:.2f}%,"
                     f" {result.pod_seconds:.0f} pod-s, SLO {'met' if self.met(best) else 'missed'}{moved}")
            if best == before:
                break
        return best

    def moves(self, settings: Autoscaling) -> list[tuple[str, Autoscaling]]:
        """Each setting moved to each other value of its grid, the others held: (name, settings)."""
        moves = [(name, settings.replace(**{name: value})) for name, values in self.grid().items() for value in values]
        return [(name, moved) for name, moved in moves if moved != settings and self.valid(moved)]

    def pair_moves(self, best: Autoscaling) -> list[tuple[str, Autoscaling]]:
        """Where one setting at a time finds nothing better: two moves together, one that saves
        pod-seconds but misses the SLO alone (or on another draw) and one of another setting that
        shortens the tail or cuts errors. At most MAX_PAIRS, the biggest savings first, then the
        shortest tails."""
        result = self.run(best)
        moves = self.moves(best)
        self.prefetch([moved for _, moved in moves])
        saving = sorted((m for m in moves if self.run(m[1]).pod_seconds < result.pod_seconds * (1 - TIE_SHARE)),
                        key=lambda m: self.run(m[1]).pod_seconds)
        helping = sorted((m for m in moves if self.run(m[1]).percentile(99) < result.percentile(99)
                          or self.run(m[1]).error_share < result.error_share),
                         key=lambda m: (self.run(m[1]).percentile(99), self.run(m[1]).error_share))
        pairs = [(a, moved.replace(**{b: getattr(helper, b)})) for a, moved in saving for b, helper in helping if a != b]
        return [(name, pair) for name, pair in pairs if self.valid(pair)][:MAX_PAIRS]

    def pair_move(self, best: Autoscaling) -> Autoscaling:
        """The pair move that beats `best` by the most (`better`), or `best` when none does."""
        pairs = self.pair_moves(best)
        self.prefetch([pair for _, pair in pairs])
        winner = best
        for name, pair in pairs:
            if self.better(pair, winner, name):
                winner = pair
        return winner

    def alternatives(self, best: Autoscaling) -> dict[str, tuple[str, object, Result | None]]:
        """Per searched setting, what its value buys, from simulations around `best` (the last pass
        already ran them): ("changed", old value, result with the old value) or ("kept", the
        cheapest other value of the grid that costs less and its result, or None when no other
        value costs less)."""
        notes: dict[str, tuple[str, object, Result | None]] = {}
        cost = self.run(best).pod_seconds
        self.prefetch([moved for _, moved in self.moves(best)])
        for name, values in self.grid().items():
            old = getattr(self.current, name)
            if getattr(best, name) != old:
                notes[name] = ("changed", old, self.run(best.replace(**{name: old})))
                continue
            others = [best.replace(**{name: v}) for v in values if v != old]
            cheaper = [o for o in others if self.valid(o) and self.run(o).pod_seconds < cost * (1 - TIE_SHARE)]
            if cheaper:
                cheapest = min(cheaper, key=lambda o: self.run(o).pod_seconds)
                notes[name] = ("kept", getattr(cheapest, name), self.run(cheapest))
            else:
                notes[name] = ("kept", None, None)
        return notes


_WORKER: dict = {}


def _start_worker(draws: tuple[tuple[Traffic, int], ...], pod: PodModel, cold_start: ColdStart) -> None:
    _WORKER.update(draws=draws, pod=pod, cold_start=cold_start)


def _simulate_in_worker(job: tuple[Autoscaling, int]) -> Result:
    settings, draw = job
    traffic, seed = _WORKER["draws"][draw]
    return simulate(traffic, _WORKER["pod"], settings, _WORKER["cold_start"], seed=seed)
