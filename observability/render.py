#!/usr/bin/env python3
"""Draw the dashboard's key panels from a Prometheus into a PNG (for docs, without Grafana).

    python observability/render.py --prometheus http://127.0.0.1:9090 --minutes 5 \
        --out docs/img/dashboard.png

The queries are those of the generated dashboard (grafana/sentiment-dashboard.json), run with
query_range; the template variables take the values given on the command line.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt  # noqa: E402
import requests  # noqa: E402

from dashboard_queries import PanelQuery, legend, load_dashboard, panel_queries, panels, substitute  # noqa: E402

KEY_PANELS = (
    "Request rate by route and status",
    "Latency p50 / p95 / p99 (service)",
    "Cache hit ratio",
    "Service startup seconds by phase",
    "Batch size (texts per engine batch)",
    "Queue wait before the batch starts",
)
UNIT_LABELS = {"reqps": "requests/s", "s": "seconds", "percentunit": "ratio", "short": "texts"}


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    response = requests.get(
        f"{prometheus}/api/v1/query_range",
        params={"query": expr, "start": start, "end": end, "step": step},
        timeout=30,
    )
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]


def draw_lines(axes, series: list[tuple[str, list[float], list[float]]], start: float) -> None:
    for name, times, values in series:
        axes.plot([t - start for t in times], values, label=name, linewidth=1.4)
    axes.set_xlabel("seconds into the time range", fontsize=8)
    if series:
        axes.legend(fontsize=7, loc="best")


def draw_bars(axes, series: list[tuple[str, list[float], list[float]]]) -> None:
    """A bar gauge panel: the last value of each series."""
    names = [name for name, _, _ in series]
    last = [values[-1] for _, _, values in series]
    axes.barh(names, last, color="#5794f2")
    for y, value in enumerate(last):
        axes.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    axes.margins(x=0.25)


def fetch(prometheus: str, queries: list[PanelQuery], values: dict[str, str], start: float, end: float, step: float):
    series = []
    for query in queries:
        for result in query_range(prometheus, substitute(query.expr, values), start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"] if math.isfinite(float(v))]
            if points:
                times, numbers = zip(*points)
                series.append((legend(query.legend, result["metric"]) or query.ref_id, list(times), list(numbers)))
    return series


def render(prometheus: str, out: Path, minutes: float, values: dict[str, str]) -> Path:
    dashboard = load_dashboard()
    by_title = {panel["title"]: panel for panel in panels(dashboard)}
    missing = [title for title in KEY_PANELS if title not in by_title]
    if missing:
        raise SystemExit(f"panels {missing} are not in the dashboard: update KEY_PANELS")
    queries = panel_queries(dashboard)
    end = time.time()
    start = end - minutes * 60
    step = max(1.0, round(minutes * 60 / 300))
    figure, grid = plt.subplots(2, 3, figsize=(13, 6.5), dpi=80)
    for axes, title in zip(grid.flat, KEY_PANELS):
        panel = by_title[title]
        series = fetch(prometheus, [q for q in queries if q.panel == title], values, start, end, step)
        unit = UNIT_LABELS.get(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""), "")
        if panel["type"] == "bargauge":
            draw_bars(axes, series)
            axes.set_xlabel(unit, fontsize=8)
        else:
            draw_lines(axes, series, start)
            axes.set_ylabel(unit, fontsize=8)
        axes.set_title(title, fontsize=10)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        if not series:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
    figure.suptitle("Sentiment service (rendered from Prometheus with the dashboard's queries)", fontsize=11)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format="png")
    plt.close(figure)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=5, help="time range to draw, ending now")
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--namespace", default="local", help="value of the dashboard's $namespace")
    parser.add_argument("--revision", default=".*", help="value of $revision (a regex; .* = all)")
    parser.add_argument("--rate-interval", default="15s", help="value of $__rate_interval")
    args = parser.parse_args()
    values = {"namespace": args.namespace, "revision": args.revision, "__rate_interval": args.rate_interval}
    try:
        out = render(args.prometheus.rstrip("/"), args.out, args.minutes, values)
    except requests.RequestException as error:
        raise SystemExit(f"cannot query Prometheus at {args.prometheus}: {error}") from None
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
