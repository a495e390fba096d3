"""The pod model against the real service: one pod, open-loop traffic at shares of its capacity.

k6/ramp.js sends evenly spaced requests (one unique short text each) at each rate of a
staircase, holding each step; the same staircase is simulated against one pod built from the
profile, and p50 and p99 of each step are printed side by side. Run right after the profile
(`profile --validate`) so both see the machine in the same state.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knative.plan.annotations import Autoscaling
from knative.plan.pod import ColdStart, PodModel
from knative.plan.simulate import simulate
from knative.plan.traffic import Traffic, generate

SHARES = (0.3, 0.6, 0.9)
RISE_SECONDS = 2  # k6/ramp.js RISE: the ramp between steps, tagged "rise" and left out
TOLERANCE = 0.25
# One pod that never scales and enforces no limit: a local Gunicorn has no queue-proxy.
ONE_POD = Autoscaling(min_scale=1, max_scale=1, initial_scale=1, container_concurrency=0,
                      target_burst_capacity=0, timeout_seconds=1e9)


@dataclass(frozen=True)
class Step:
    rate: float
    share: float
    measured_p50_ms: float
    measured_p99_ms: float
    simulated_p50_ms: float
    simulated_p99_ms: float
    achieved_rps: float

    def within(self, tolerance: float = TOLERANCE) -> bool:
        return all(abs(sim / real - 1) <= tolerance for sim, real in (
            (self.simulated_p50_ms, self.measured_p50_ms), (self.simulated_p99_ms, self.measured_p99_ms)))


def step_rates(pod: PodModel, shares=SHARES) -> list[float]:
    """Whole requests per second (k6 stage targets are integers)."""
    return [float(max(1, round(share * pod.capacity_rps))) for share in shares]


def rate_label(rate: float) -> str:
    """How k6/ramp.js names a step: String(Number(rate))."""
    return f"{rate:g}"


def staircase(rates: list[float], step_seconds: float, seed: int = 1) -> tuple[Traffic, list[tuple[float, float]]]:
    """The arrivals k6/ramp.js sends (ramping-arrival-rate: evenly spaced, ramps between steps)
    and the hold window of each step."""
    knots_t, knots_r, windows = [0.0], [0.0], []
    t = 0.0
    for rate in rates:
        knots_t += [t + RISE_SECONDS, t + RISE_SECONDS + step_seconds]
        knots_r += [rate, rate]
        windows.append((t + RISE_SECONDS, t + RISE_SECONDS + step_seconds))
        t += RISE_SECONDS + step_seconds
    arrivals = generate(lambda x: np.interp(x, knots_t, knots_r), t, "uniform", seed)
    return Traffic(arrivals, t, "k6/ramp.js staircase " + ",".join(map(rate_label, rates))), windows


def simulate_steps(pod: PodModel, rates: list[float], step_seconds: float) -> list[tuple[float, float]]:
    """(p50 ms, p99 ms) of each step, simulated."""
    traffic, windows = staircase(rates, step_seconds)
    result = simulate(traffic, pod, ONE_POD, ColdStart(process_start_seconds=0.0), start="warm", warm_pods=1)
    figures = []
    for begin, end in windows:
        inside = (traffic.arrivals >= begin) & (traffic.arrivals < end)
        latency = result.latency[inside]
        figures.append((1000 * float(np.percentile(latency, 50)), 1000 * float(np.percentile(latency, 99))))
    return figures


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")



def measure_steps(bench, model_dir: Path, overrides: dict[str, str], rates: list[float], step_seconds: int,
                  workdir: Path) -> tuple[list[dict], dict]:
    """k6/ramp.js against a fresh local pod; per step: p50, p99, achieved rate; and the CPUs the
    pod and everything else (k6 included) used meanwhile: other work on the machine takes
    capacity from the pod, which matters most near saturation."""
    service = bench.service({"MODEL_DIR": str(model_dir), **overrides}, workdir / "service.log")
    try:
        env = {"BASE_URL": service.base_url, "RATES": ",".join(map(rate_label, rates)), "STEP": str(step_seconds),
               "RISE": str(RISE_SECONDS), "SLO_P99_MS": "600000", "MAX_VUS": "400"}
        started, busy, pod = time.monotonic(), busy_cpu_seconds(), service.cpu_seconds()
        summary = bench.k6_summary("ramp.js", env, len(rates) * (step_seconds + RISE_SECONDS), workdir)
        wall = time.monotonic() - started
        pod_cpus = (service.cpu_seconds() - pod) / wall
        cpus = {"pod": pod_cpus, "others": (busy_cpu_seconds() - busy) / wall - pod_cpus}
    finally:
        service.stop()
    steps = {rate_label(s["rate"]): s for s in summary["figures"]["steps"]}
    measured = []
    for rate in rates:
        values = summary["metrics"][f"http_req_duration{{step:{rate_label(rate)}}}"]["values"]
        measured.append({"p50_ms": values["med"], "p99_ms": values["p(99)"],
                         "achieved_rps": steps[rate_label(rate)]["achieved_rps"]})
    return measured, cpus


def check(bench, profile: dict, model_dir: Path, overrides: dict[str, str], step_seconds: int, workdir: Path,
          shares=SHARES) -> tuple[list[Step], dict]:
    pod = PodModel.from_profile(profile, 1)
    rates = step_rates(pod, shares)
    measured, cpus = measure_steps(bench, model_dir, overrides, rates, step_seconds, workdir)
    simulated = simulate_steps(pod, rates, step_seconds)
    steps = [Step(rate, share, m["p50_ms"], m["p99_ms"], s50, s99, m["achieved_rps"])
             for rate, share, m, (s50, s99) in zip(rates, shares, measured, simulated)]
    return steps, cpus


def report(steps: list[Step], cpus: dict, cpu_summary: str) -> str:
    lines = [f"pod model against k6, one pod, open loop (k6/ramp.js), {cpu_summary}",
             f"CPUs used during the open-loop run: pod {cpus['pod']:.2f}, k6 and every other process {cpus['others']:.2f}",
             f"{'rate':>7} {'share':>6} {'sent':>7} | {'k6 p50':>8} {'sim p50':>8} {'diff':>6} | "
             f"{'k6 p99':>8} {'sim p99':>8} {'diff':>6} | within {TOLERANCE:.0%}"]
    for s in steps:
        lines.append(
            f"{s.rate:7.1f} {s.share:6.0%} {s.achieved_rps:7.1f} | {s.measured_p50_ms:8.1f} {s.simulated_p50_ms:8.1f}"
            f" {s.simulated_p50_ms / s.measured_p50_ms - 1:+6.0%} | {s.measured_p99_ms:8.1f} {s.simulated_p99_ms:8.1f}"
            f" {s.simulated_p99_ms / s.measured_p99_ms - 1:+6.0%} | {'yes' if s.within() else 'NO'}")
    return "\n".join(lines)
