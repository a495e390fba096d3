"""Plot a k6 run: throughput and latency percentiles over time, in 1 s buckets.

Reads the CSV time series k6 writes with `--out csv=FILE` (gzip when FILE ends in .gz) and
writes a PNG with two panels: requests per second (failed ones apart, k6's VUs on a second
axis) and p50/p95/p99 of http_req_duration. k6/run.sh calls it after every run.

    python k6/plot.py RESULTS/timeseries.csv.gz --out RESULTS/timeseries.png [--summary RESULTS/summary.json]

With --summary, the p99 objective of the run's http_req_duration threshold is drawn as a line.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PERCENTILES = (50, 95, 99)


class Series:
    """Per-second samples of one run, seconds counted from the first sample."""

    def __init__(self) -> None:
        self.durations: dict[int, list[float]] = defaultdict(list)
        self.failed: dict[int, int] = defaultdict(int)
        self.vus: dict[int, float] = {}
        self.start: int | None = None

    def seconds(self) -> range:
        last = max([*self.durations, *self.failed, *self.vus], default=-1)
        return range(last + 1)


def read_series(path: Path) -> Series:
    opener = gzip.open if path.suffix == ".gz" else open
    series = Series()
    with opener(path, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"{path}: no samples")
    series.start = min(int(float(row["timestamp"])) for row in rows)
    for row in rows:
        second = int(float(row["timestamp"])) - series.start
        name, value = row["metric_name"], float(row["metric_value"])
        if name == "http_req_duration":
            series.durations[second].append(value)
        elif name == "http_req_failed" and value > 0:
            series.failed[second] += 1
        elif name == "vus":
            series.vus[second] = value
    if not series.durations:
        raise SystemExit(f"{path}: no http_req_duration samples (did the run send requests?)")
    return series


def slo_from_summary(path: Path) -> float | None:
    """The N of a `p(99)<N` threshold on http_req_duration (any tag), from summary.json."""
    thresholds = json.loads(path.read_text(encoding="utf-8")).get("thresholds", [])
    for threshold in thresholds:
        match = re.fullmatch(r"p\(99\)<([0-9.]+)", threshold["expression"])
        if threshold["metric"].startswith("http_req_duration") and match:
            return float(match.group(1))
    return None


def draw(series: Series, title: str, slo_ms: float | None, out: Path) -> None:
    seconds = list(series.seconds())
    requests = [len(series.durations.get(s, [])) for s in seconds]
    failed = [series.failed.get(s, 0) for s in seconds]
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(9, 5.6), dpi=100)

    top.plot(seconds, requests, color="tab:blue", label="requests/s")
    if any(failed):
        top.bar(seconds, failed, width=1.0, color="tab:red", alpha=0.6, label="failed/s")
    top.set_ylabel("requests / s")
    top.grid(alpha=0.3)
    if series.vus:
        vus_axis = top.twinx()
        vu_seconds = sorted(series.vus)
        vus_axis.step(vu_seconds, [series.vus[s] for s in vu_seconds], where="post",
                      color="tab:gray", linestyle="--", linewidth=1, label="k6 VUs")
        vus_axis.set_ylabel("VUs", color="tab:gray")
        vus_axis.set_ylim(bottom=0)
        handles = top.get_legend_handles_labels()[0] + vus_axis.get_legend_handles_labels()[0]
        top.legend(handles=handles, loc="upper left", fontsize=8)
    else:
        top.legend(loc="upper left", fontsize=8)

    busy = [s for s in seconds if series.durations.get(s)]
    for percentile, color in zip(PERCENTILES, ("tab:green", "tab:orange", "tab:red")):
        values = [np.percentile(series.durations[s], percentile) for s in busy]
        bottom.plot(busy, values, color=color, marker=".", markersize=3, label=f"p{percentile}")
    if slo_ms is not None:
        bottom.axhline(slo_ms, color="black", linestyle=":", linewidth=1, label=f"SLO p99 {slo_ms:g} ms")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds since start")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8)

    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="k6 CSV output (.csv or .csv.gz)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="k6 run", help="figure title")
    parser.add_argument("--summary", type=Path, default=None, help="summary.json of the run, for the SLO line")
    args = parser.parse_args(argv)
    if not args.csv.exists():
        raise SystemExit(f"{args.csv}: no such file (did k6 run with --out csv=...?)")
    slo_ms = slo_from_summary(args.summary) if args.summary and args.summary.exists() else None
    draw(read_series(args.csv), args.title, slo_ms, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
