#!/usr/bin/env python3
"""The Grafana dashboard of the sentiment service, generated as code.

    python observability/dashboard.py           # (re)write observability/grafana/sentiment-dashboard.json
    python observability/dashboard.py --check   # exit 1 if the committed JSON is out of date

Built with grafana-foundation-sdk (Grafana 10 dashboard schema; Grafana 10 and 11 import it).
One row per question an operator asks: how much traffic and how fast, how many errors, how
long cold starts take, how well the cache and the batcher work, and what is deployed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode, LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent / "grafana" / "sentiment-dashboard.json"
UID = "sentiment-service"

# --- Metric names: the one place ------------------------------------------------------------
# The service's own metrics, defined in model/metrics.py.
HTTP_DURATION = "sentiment_http_request_duration_seconds"  # histogram: route, method, status
IN_FLIGHT = "sentiment_http_requests_in_flight"  # gauge
BATCH_SIZE = "sentiment_batch_size_texts"  # histogram: texts per engine batch
QUEUE_WAIT = "sentiment_queue_wait_seconds"  # histogram: wait before a text's batch starts
INFERENCE = "sentiment_inference_duration_seconds"  # histogram: engine time per batch
TEXTS = "sentiment_texts_total"  # counter: source = cache | computed
CACHE_ERRORS = "sentiment_cache_errors_total"  # counter: operation = get | set
STARTUP = "sentiment_startup_seconds"  # gauge: phase = imports | model_load | warmup | ready
BUILD_INFO = "sentiment_build_info"  # gauge = 1: model, revision, backend, precision, k_revision, isa

# Knative Serving >= 1.21 with config-observability metrics-protocol and
# request-metrics-protocol = prometheus: the OpenTelemetry names (Serving 1.19 replaced the
# OpenCensus ones, e.g. revision_request_latencies_bucket, autoscaler_desired_pods; 1.19 and 1.20
# differ again in places). Durations are in seconds. Labels: k8s_namespace_name,
# kn_service_name, kn_revision_name.
KN_REQUEST_DURATION = "http_server_request_duration_seconds"  # queue-proxy and activator
KN_PODS_DESIRED = "kn_revision_pods_desired"  # autoscaler
KN_PODS_COUNT = "kn_revision_pods_count"  # autoscaler: pods ready
# The two emitters of KN_REQUEST_DURATION are told apart by the job the scrape config sets
# (observability/k8s/).
QUEUE_PROXY_JOB = "knative-queue-proxy"
ACTIVATOR_JOB = "knative-activator"
# ---------------------------------------------------------------------------------------------

PREDICT_ROUTES = 'route=~"/predict|/project-predict"'
LATENCY_SLO_SECONDS = 0.5  # the p99 objective of alerts.yml (SentimentLatencyP99High)
ERROR_RATIO_SLO = 0.01  # SentimentErrorRatioHigh
RATE_WINDOW = "$__rate_interval"
# The pod and revision labels of the service's own metrics come from the scrape relabelling
# (observability/k8s/podmonitor-sentiment.yaml; static labels in prometheus.yml locally).
REVISION_MATCHERS = 'k8s_namespace_name="$namespace", kn_revision_name=~"$revision"'
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def selector(*matchers: str) -> str:
    return "{" + ", ".join((REVISION_MATCHERS, *matchers)) + "}"


def rate(metric: str, *matchers: str) -> str:
    return f"rate({metric}{selector(*matchers)}[{RATE_WINDOW}])"


def quantile(q: float, histogram: str, *matchers: str, by: str = "") -> str:
    groups = ", ".join(filter(None, ("le", by)))
    return f"histogram_quantile({q}, sum by ({groups}) ({rate(histogram + '_bucket', *matchers)}))"


def ratio(part: str, whole: str) -> str:
    # `or vector(0)`: no matching samples (no errors, no hits yet) reads 0, not "no data".
    return f"(sum({part}) or vector(0)) / sum({whole})"


def query(expr: str, legend: str, instant: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)
    return target.instant().format("table") if instant else target.range()


def graph(title: str, unit: str, description: str, *targets: prometheus.Dataquery, span: int = 8) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(span)
        .height(8)
        .fill_opacity(10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).show_legend(True))
    )
    for ref_id, target in zip("ABCDEFGH", targets):
        panel.with_target(target.ref_id(ref_id))
    return panel


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(value=v, color=c) for v, c in steps])


def with_objective_line(panel: timeseries.Panel, objective: float) -> timeseries.Panel:
    """A dashed red line at the alert threshold, so the graph shows the distance to it."""
    dashed = GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.DASHED)
    return panel.thresholds(thresholds((None, "green"), (objective, "red"))).thresholds_style(dashed)


def traffic_row() -> list:
    latency = "Request latency at the service (Gunicorn worker, predict routes), from its own histogram."
    proxy = "Latency at Knative's queue-proxy, in front of the container: includes queueing in the pod."
    return [
        Row("Traffic and latency"),
        graph(
            "Request rate by route and status", "reqps", "Requests answered per second.",
            query(f"sum by (route, status) ({rate(HTTP_DURATION + '_count')})", "{{route}} {{status}}"),
        ),
        with_objective_line(
            graph(
                "Latency p50 / p95 / p99 (service)", "s", latency,
                *(query(quantile(q, HTTP_DURATION, PREDICT_ROUTES), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)),
            ),
            LATENCY_SLO_SECONDS,
        ),
        graph(
            "Latency p50 / p95 / p99 (queue-proxy)", "s", proxy,
            *(
                query(quantile(q, KN_REQUEST_DURATION, f'job="{QUEUE_PROXY_JOB}"'), f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ),
        ),
        graph(
            "In-flight requests", "short", "Requests inside the service now, per revision.",
            query(f"sum by (kn_revision_name) ({IN_FLIGHT}{selector()})", "{{kn_revision_name}}"),
        ),
    ]


def errors_row() -> list:
    service_5xx = ratio(rate(HTTP_DURATION + "_count", 'status=~"5.."'), rate(HTTP_DURATION + "_count"))
    proxy_5xx = ratio(
        rate(KN_REQUEST_DURATION + "_count", f'job="{QUEUE_PROXY_JOB}"', 'http_response_status_code=~"5.."'),
        rate(KN_REQUEST_DURATION + "_count", f'job="{QUEUE_PROXY_JOB}"'),
    )
    return [
        Row("Errors"),
        with_objective_line(
            graph(
                "Error ratio (5xx share)", "percentunit",
                "Share of answers with a 5xx status. The queue-proxy line also counts 503s the pod's "
                "queue gave before the request reached the service.",
                query(service_5xx, "service"),
                query(proxy_5xx, "queue-proxy"),
                span=12,
            ),
            ERROR_RATIO_SLO,
        ),
        graph(
            "Redis cache errors", "ops", "Failed Redis calls per second; the service then answers uncached.",
            query(f"sum by (operation) ({rate(CACHE_ERRORS)})", "{{operation}}"),
            span=12,
        ),
    ]


def cold_start_row() -> list:
    return [
        Row("Cold starts"),
        graph(
            "Pods desired / ready (autoscaler)", "short",
            "A cold start is desired leaving 0 and ready reaching 1.",
            query(f"sum by (kn_revision_name) ({KN_PODS_DESIRED}{selector()})", "desired {{kn_revision_name}}"),
            query(f"sum by (kn_revision_name) ({KN_PODS_COUNT}{selector()})", "ready {{kn_revision_name}}"),
        ),
        graph(
            "Request latency through the activator", "s",
            "Requests buffered by the activator while the revision scales from zero: "
            "p99 and the highest bucket bound reached (the cold-start wait as clients see it).",
            *(
                query(quantile(q, KN_REQUEST_DURATION, f'job="{ACTIVATOR_JOB}"', by="kn_revision_name"), name + " {{kn_revision_name}}")
                for q, name in ((0.99, "p99"), (1.0, "max"))  # 1.0: upper bound of the highest bucket reached
            ),
        ),
        bargauge.Panel()
        .title("Service startup seconds by phase")
        .description("Slowest pod of each phase; ready = process start to ready (a pod's own cold start).")
        .datasource(DATASOURCE)
        .unit("s")
        .span(8)
        .height(8)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(thresholds((None, "green"), (5, "red")))
        .with_target(query(f"max by (phase) ({STARTUP}{selector()})", "{{phase}}").ref_id("A")),
    ]


def cache_and_batching_row() -> list:
    hit_ratio = ratio(rate(TEXTS, 'source="cache"'), rate(TEXTS))
    return [
        Row("Cache and batching"),
        graph(
            "Cache hit ratio", "percentunit",
            "Share of texts answered from the cache (the worker's rows in memory or Redis) instead of the model; "
            "a text shared with a concurrent request that computed it counts as computed.",
            query(hit_ratio, "hit ratio"),
            span=6,
        ).min(0).max(1),
        graph(
            "Batch size (texts per engine batch)", "short", "How full the dynamic batcher makes each batch.",
            *(query(quantile(q, BATCH_SIZE), f"p{round(q * 100)}") for q in (0.5, 0.99)),
            span=6,
        ),
        graph(
            "Queue wait before the batch starts", "s", "Time a text waits for the engine.",
            *(query(quantile(q, QUEUE_WAIT), f"p{round(q * 100)}") for q in (0.5, 0.99)),
            span=6,
        ),
        graph(
            "Engine time per batch", "s", "Inference time of one batch.",
            *(query(quantile(q, INFERENCE), f"p{round(q * 100)}") for q in (0.5, 0.99)),
            span=6,
        ),
    ]


BUILD_LABELS = "kn_revision_name, pod, model, revision, backend, precision"


def build_row() -> list:
    hidden = {name: True for name in ("Time", "Value", "__name__", "job", "instance", "endpoint", "container")}
    return [
        Row("What is deployed"),
        table.Panel()
        .title("Build info")
        .description("Model, backend, precision and revision of every running pod.")
        .datasource(DATASOURCE)
        .span(16)
        .height(6)
        .with_target(query(f"max by ({BUILD_LABELS}) ({BUILD_INFO}{selector()})", "", instant=True).ref_id("A"))
        .with_transformation(DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})),
        stat.Panel()
        .title("Pods serving")
        .description("Pods reporting build info, per revision.")
        .datasource(DATASOURCE)
        .span(8)
        .height(6)
        .with_target(query(f"count by (kn_revision_name) ({BUILD_INFO}{selector()})", "{{kn_revision_name}}").ref_id("A")),
    ]


def variables() -> list:
    namespace = (
        QueryVariable("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query(f"label_values({BUILD_INFO}, k8s_namespace_name)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )
    revision = (
        QueryVariable("revision")
        .label("Revision")
        .datasource(DATASOURCE)
        .query(f'label_values({BUILD_INFO}{{k8s_namespace_name="$namespace"}}, kn_revision_name)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_DESC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return [DatasourceVariable("datasource").label("Data source").type("prometheus"), namespace, revision]


def build_dashboard() -> Dashboard:
    dashboard = (
        Dashboard("Sentiment service")
        .uid(UID)
        .description("Traffic, latency, errors, cold starts, cache and batching of the sentiment service on Knative.")
        .tags(["sentiment", "knative", "inference"])
        .refresh("10s")
        .time("now-30m", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )
    for row in (traffic_row(), errors_row(), cold_start_row(), cache_and_batching_row(), build_row()):
        dashboard.with_row(row[0])
        for panel in row[1:]:
            dashboard.with_panel(panel)
    return dashboard


def render_json() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build_dashboard().build()) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from the generator")
    args = parser.parse_args()
    text = render_json()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.name} is out of date: run python observability/dashboard.py", file=sys.stderr)
            return 1
        print(f"{OUTPUT.name} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
