"""What a run prints and draws: figures, side-by-side tables, the chart (PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from knative.plan.simulate import Result

CHART_BUCKET_SECONDS = 10


def figure_rows(results: dict[str, Result]) -> str:
    """One column per named run."""
    names = list(results)
    rows = [
        ("requests", lambda r: f"{r.requests:,}"),
        ("p50 latency", lambda r: _ms(r.percentile(50))),
        ("p95 latency", lambda r: _ms(r.percentile(95))),
        ("p99 latency", lambda r: _ms(r.percentile(99))),
        ("waited on a cold start", lambda r: f"{100 * r.cold_share:.2f}%"),
        ("503 (queue full)", lambda r: f"{r.rejected:,}"),
        ("504 (past the deadline)", lambda r: f"{r.timed_out:,}"),
        ("errors", lambda r: f"{100 * r.error_share:.3f}%"),
        ("through the activator", lambda r: f"{100 * r.proxied_share:.1f}%"),
        ("most pods", lambda r: str(r.max_pods)),
        ("pod-seconds", lambda r: f"{r.pod_seconds:,.0f}"),
        ("simulated in", lambda r: f"{r.wall_seconds:.2f} s"),
    ]
    width = max(14, *(len(n) for n in names))
    lines = [f"{'':27}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for label, cell in rows:
        lines.append(f"{label:27}" + "".join(f"{cell(results[n]):>{width + 2}}" for n in names))
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{1000 * seconds:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def short_figures(result: Result) -> str:
    return (f"p99 {_ms(result.percentile(99))}, errors {100 * result.error_share:.2f}%,"
            f" cold {100 * result.cold_share:.1f}%, {result.pod_seconds:,.0f} pod-s, up to {result.max_pods} pods")


def pods_over_time(result: Result, every: int = 60) -> str:
    """Pods (ready + starting) at the end of each `every` seconds, one line."""
    pods = np.asarray(result.timeline["ready"]) + np.asarray(result.timeline["starting"])
    marks = pods[every - 1::every]
    return f"pods (ready + starting) every {every} s: " + " ".join(str(int(n)) for n in marks)


def p99_by_bucket(result: Result, bucket: float = CHART_BUCKET_SECONDS) -> tuple[np.ndarray, np.ndarray]:
    """(bucket start times, p99 latency in ms of the requests that arrived in each bucket)."""
    edges = np.arange(0.0, result.duration + bucket, bucket)
    index = np.digitize(result.arrivals, edges) - 1
    answered = ~np.isnan(result.latency)
    p99 = np.full(edges.size - 1, np.nan)
    for b in np.unique(index[answered]):
        if 0 <= b < p99.size:
            p99[b] = 1000 * np.percentile(result.latency[answered & (index == b)], 99)
    return edges[:-1], p99


def chart(results: dict[str, Result], path: Path, title: str, slo_p99_ms: float | None = None) -> None:
    """Requests/s, pods (ready + starting) and p99 over time for each named run."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    colours = ["tab:green", "tab:red", "tab:blue", "tab:orange"]
    figure, (rate_axis, pods_axis, p99_axis) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                                                            gridspec_kw={"height_ratios": [1, 1.4, 1.4]})
    first = next(iter(results.values()))
    seconds = np.arange(int(math.ceil(first.duration)) + 1)
    counts = np.bincount(first.arrivals.astype(np.int64), minlength=seconds.size)[: seconds.size]
    rate_axis.fill_between(seconds, counts, step="post", color="0.6")
    rate_axis.set_ylabel("requests/s")
    rate_axis.set_title(title, fontsize=10)
    for colour, (name, result) in zip(colours, results.items()):
        pods = np.asarray(result.timeline["ready"]) + np.asarray(result.timeline["starting"])
        pods_axis.step(np.arange(1, pods.size + 1), pods, where="post", color=colour, label=f"{name}: ready + starting")
        ready = np.asarray(result.timeline["ready"])
        pods_axis.step(np.arange(1, ready.size + 1), ready, where="post", color=colour, alpha=0.4, linestyle=":",
                       label=f"{name}: ready")
        start, p99 = p99_by_bucket(result)
        p99_axis.step(start, p99, where="post", color=colour, label=f"{name}: p99 per {CHART_BUCKET_SECONDS} s")
    pods_axis.set_ylabel("pods")
    pods_axis.legend(fontsize=8, loc="upper right")
    if slo_p99_ms:
        p99_axis.axhline(slo_p99_ms, color="black", linestyle="--", linewidth=1, label=f"SLO p99 {slo_p99_ms:g} ms")
    p99_axis.set_yscale("log")
    p99_axis.set_ylabel("p99 latency (ms)")
    p99_axis.set_xlabel("seconds (requests grouped by arrival)")
    p99_axis.legend(fontsize=8, loc="upper right")
    for axis in (rate_axis, pods_axis, p99_axis):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
