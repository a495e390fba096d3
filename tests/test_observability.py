"""Observability: the dashboard, scrape configs and alert rules work with the real service.

The fast tests check the generated dashboard is current, the alert rules pass promtool and
fire in its unit tests, and the Kubernetes scrape configs produce the labels the dashboard
selects on. The slow test starts the service and a real Prometheus scraping it every second,
drives a short load, and evaluates every dashboard query through Prometheus's HTTP API.
"""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from tests.conftest import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
OBSERVABILITY = REPO / "observability"
sys.path.insert(0, str(OBSERVABILITY))

import dashboard  # noqa: E402  (observability/dashboard.py)
import dashboard_queries  # noqa: E402

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTS = OBSERVABILITY / "prometheus" / "alerts.yml"
LOCAL_CONFIG = OBSERVABILITY / "prometheus" / "prometheus.yml"
K8S = OBSERVABILITY / "k8s"
QUEUE_PROXY_TRAFFIC_PORTS = {8012, 8013, "http", "queue-port", "http2"}

needs_promtool = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool not installed (Debian package prometheus)")
needs_prometheus = pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed (Debian package prometheus)")


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=REPO, timeout=120)


# --- fast: generated files and static configs -----------------------------------------------


def test_committed_dashboard_json_matches_the_generator():
    result = run(sys.executable, OBSERVABILITY / "dashboard.py", "--check")
    assert result.returncode == 0, result.stderr


def test_check_flags_a_stale_dashboard_and_regeneration_fixes_it(tmp_path):
    generator = tmp_path / "dashboard.py"
    shutil.copy(OBSERVABILITY / "dashboard.py", generator)
    (tmp_path / "grafana").mkdir()
    (tmp_path / "grafana" / "sentiment-dashboard.json").write_text("{}\n")
    stale = run(sys.executable, generator, "--check")
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert run(sys.executable, generator).returncode == 0
    assert run(sys.executable, generator, "--check").returncode == 0
    assert (tmp_path / "grafana" / "sentiment-dashboard.json").read_text() == dashboard.OUTPUT.read_text()


def test_dashboard_has_the_template_variables_every_query_uses():
    board = dashboard_queries.load_dashboard()
    names = {variable["name"] for variable in board["templating"]["list"]}
    assert {"datasource", "namespace", "revision"} <= names
    for query in dashboard_queries.panel_queries(board):
        used = set(re.findall(r"\$(\w+)", query.expr)) - {"__rate_interval"}
        assert used <= names, f"{query.panel}: unknown variables {used - names}"
        assert 'k8s_namespace_name="$namespace"' in query.expr, f"{query.panel} ignores the namespace variable"


@needs_promtool
def test_alert_rules_are_valid_and_their_unit_tests_fire():
    checked = run(PROMTOOL, "check", "rules", ALERTS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(PROMTOOL, "test", "rules", OBSERVABILITY / "prometheus" / "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_local_prometheus_config_is_valid():
    checked = run(PROMTOOL, "check", "config", LOCAL_CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def k8s_documents() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def monitor_endpoints(kind: str) -> dict[str, list[dict]]:
    key = {"PodMonitor": "podMetricsEndpoints", "ServiceMonitor": "endpoints"}[kind]
    return {doc["metadata"]["name"]: doc["spec"][key] for doc in k8s_documents() if doc.get("kind") == kind}


def relabelled(endpoint: dict) -> dict[str, str]:
    """target label -> its source (a meta label, or the fixed replacement)."""
    return {rule["targetLabel"]: (rule.get("sourceLabels") or [rule.get("replacement")])[0] for rule in endpoint.get("relabelings", [])}


def test_scrape_configs_never_touch_the_queue_proxy_traffic_port():
    endpoints = [e for kind in ("PodMonitor", "ServiceMonitor") for group in monitor_endpoints(kind).values() for e in group]
    assert endpoints, "no monitors found under observability/k8s"
    for endpoint in endpoints:
        assert endpoint.get("port") not in QUEUE_PROXY_TRAFFIC_PORTS and endpoint.get("portNumber") not in QUEUE_PROXY_TRAFFIC_PORTS


def test_pod_monitors_give_the_labels_the_dashboard_selects_on():
    pod_monitors = monitor_endpoints("PodMonitor")
    service, queue_proxy = pod_monitors["sentiment"][0], pod_monitors["sentiment-queue-proxy"][0]
    assert (service["port"], service["path"]) == ("user-port", "/metrics")
    assert queue_proxy["port"] == "http-usermetric"
    for endpoint in (service, queue_proxy):
        labels = relabelled(endpoint)
        assert labels["kn_revision_name"] == "__meta_kubernetes_pod_label_serving_knative_dev_revision"
        assert labels["kn_service_name"] == "__meta_kubernetes_pod_label_serving_knative_dev_service"
        assert labels["k8s_namespace_name"] == "__meta_kubernetes_namespace"
    assert relabelled(queue_proxy)["job"] == dashboard.QUEUE_PROXY_JOB
    service_monitors = monitor_endpoints("ServiceMonitor")
    assert relabelled(service_monitors["knative-activator"][0])["job"] == dashboard.ACTIVATOR_JOB
    assert {e["port"] for group in service_monitors.values() for e in group} == {"http-metrics"}


def istio_scrape_configs() -> dict[str, dict]:
    values = yaml.safe_load((K8S / "prometheus-istio-mtls-values.yaml").read_text())
    return {job["job_name"]: job for job in values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]}


def test_istio_mtls_scrape_configs_match_the_pod_monitors():
    jobs = istio_scrape_configs()
    assert set(jobs) == {"sentiment", dashboard.QUEUE_PROXY_JOB}
    for job, port in (("sentiment", "user-port"), (dashboard.QUEUE_PROXY_JOB, "http-usermetric")):
        rules = jobs[job]["relabel_configs"]
        kept_ports = [r["regex"] for r in rules if r.get("action") == "keep" and "container_port_name" in r["source_labels"][0]]
        assert kept_ports == [port]
        copied = {r["target_label"]: r["source_labels"][0] for r in rules if "target_label" in r}
        assert copied["kn_revision_name"] == "__meta_kubernetes_pod_label_serving_knative_dev_revision"
        assert copied["k8s_namespace_name"] == "__meta_kubernetes_namespace"
        assert jobs[job]["scheme"] == "https"


@needs_promtool
def test_istio_mtls_scrape_configs_are_valid_prometheus_config(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    jobs = []
    for job in istio_scrape_configs().values():
        tls = {key: str(certs / Path(value).name) if key.endswith("_file") else value for key, value in job["tls_config"].items()}
        for name in ("root-cert.pem", "cert-chain.pem", "key.pem"):
            (certs / name).write_text("")  # promtool checks that the files exist, not their content
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        # Debian's Prometheus is built without Kubernetes discovery: check the rest of the job
        # (TLS, scheme, relabelling) with a static target instead.
        jobs.append({**job, "tls_config": tls, "static_configs": [{"targets": ["127.0.0.1:8080"]}]})
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": jobs}))
    checked = run(PROMTOOL, "check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_config_observability_patch_turns_prometheus_export_on():
    patch = yaml.safe_load((K8S / "config-observability-patch.yaml").read_text())
    assert patch["data"] == {"metrics-protocol": "prometheus", "request-metrics-protocol": "prometheus"}


# --- slow: a real Prometheus scraping the real service --------------------------------------


def prometheus_config(service_address: str, rules: Path) -> dict:
    """The committed local config, scraping the test's service every second."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules)]
    (job,) = config["scrape_configs"]
    job["static_configs"][0]["targets"] = [service_address]
    return config


@pytest.fixture(scope="module")
def live_service(service, tiny_artifact, redis_server):
    """The real service (Gunicorn, tiny ONNX artifact) with the session's real Redis."""
    handle = service({"MODEL_DIR": tiny_artifact, "REDIS_URL": redis_server.url, "CACHE_KEY_PREFIX": "observability-test:"})
    yield handle.base_url
    handle.stop()


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def prometheus_server(live_service, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(live_service.removeprefix("http://"), ALERTS)))
    url = f"http://127.0.0.1:{free_port()}"
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={url.removeprefix('http://')}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: answers(f"{url}/-/ready"), 30, "Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()


SENTENCES = [
    "I love this movie", "what a waste of time", "the plot was thin but the acting was great",
    "I am a k8s cluster", "absolutely wonderful", "boring and far too long", "not bad at all",
    "the soundtrack is lovely", "I would not watch it again", "a small gem of a film",
]


def drive_load(base_url: str, requests_count: int = 200) -> list[int]:
    """Requests of 1-4 texts drawn from a small set, so many texts repeat (cache hits)."""
    chooser = random.Random(7)
    bodies = [{"text": chooser.sample(SENTENCES, chooser.randint(1, 4))} for _ in range(requests_count)]
    bodies += [{"text": [f"a sentence seen once, number {n}"]} for n in range(20)]
    with requests.Session() as session, ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda body: session.post(f"{base_url}/predict", json=body, timeout=30).status_code, bodies))


@pytest.fixture(scope="module")
def loaded_prometheus(live_service, prometheus_server):
    # One request and a scrape before the load: a labelled series is born at its first request,
    # and Prometheus reads a series' first sample as its start, so the load's rise must come after.
    assert requests.post(f"{live_service}/predict", json={"text": ["warm-up"]}, timeout=30).ok
    seen = 'sum(sentiment_http_request_duration_seconds_count{route="/predict"}) >= 1'
    wait_until(lambda: instant(prometheus_server, seen), 30, "a scrape before the load")
    statuses = drive_load(live_service)
    assert set(statuses) == {200}, f"load got statuses {sorted(set(statuses))}"
    texts_seen = f'sum(sentiment_texts_total{{job="sentiment"}}) >= {len(statuses)}'
    wait_until(lambda: instant(prometheus_server, texts_seen), 30, "a scrape after the load")
    time.sleep(2)  # two more scrapes, so every rate() window holds the end of the load
    return prometheus_server


def instant(prometheus: str, expr: str) -> list[dict]:
    body = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    return body["data"]["result"]


def label_values(prometheus: str, variable_query: str) -> list[str]:
    """Grafana's label_values(selector, label) through Prometheus's label values API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable_query)
    assert match, f"unexpected variable query {variable_query}"
    selector, label = match.groups()
    body = requests.get(f"{prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def template_values(prometheus: str, board: dict) -> dict[str, str]:
    """Resolve the dashboard's variables as Grafana would, from the live data."""
    queries = dashboard_queries.variable_queries(board)
    namespaces = label_values(prometheus, queries["namespace"])
    assert namespaces == ["local"], f"namespace variable offers {namespaces}"
    revisions = label_values(prometheus, dashboard_queries.substitute(queries["revision"], {"namespace": namespaces[0]}))
    assert revisions == ["local"], f"revision variable offers {revisions}"
    return {"namespace": namespaces[0], "revision": revisions[0], "__rate_interval": "15s"}


@pytest.mark.slow
@needs_prometheus
def test_every_dashboard_query_evaluates_on_live_data(loaded_prometheus):
    board = dashboard_queries.load_dashboard()
    values = template_values(loaded_prometheus, board)
    queries = dashboard_queries.panel_queries(board)
    assert len(queries) >= 15
    without_data = []
    for query in queries:  # instant() asserts that Prometheus parsed and ran every query
        result = instant(loaded_prometheus, dashboard_queries.substitute(query.expr, values))
        if query.reads_service_metrics and not any(math.isfinite(float(s["value"][1])) for s in result):
            without_data.append(f"{query.panel} [{query.ref_id}]")
    assert not without_data, f"service queries without a finite value: {without_data}"


@pytest.mark.slow
@needs_prometheus
def test_prometheus_loads_and_evaluates_every_alert_rule(loaded_prometheus):
    body = requests.get(f"{loaded_prometheus}/api/v1/rules", timeout=10).json()
    health = {rule["name"]: rule["health"] for group in body["data"]["groups"] for rule in group["rules"]}
    expected = [rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]
    # evaluated every second during the load: "ok" (not "unknown" or "err") for each
    assert health == {name: "ok" for name in expected}


@pytest.mark.slow
@needs_prometheus
def test_cache_hit_ratio_panel_sees_the_repeated_texts(loaded_prometheus):
    (hit_ratio,) = [q for q in dashboard_queries.panel_queries(dashboard_queries.load_dashboard()) if q.panel == "Cache hit ratio"]
    values = {"namespace": "local", "revision": "local", "__rate_interval": "1m"}
    (sample,) = instant(loaded_prometheus, dashboard_queries.substitute(hit_ratio.expr, values))
    assert 0 < float(sample["value"][1]) < 1


@pytest.mark.slow
@needs_prometheus
def test_service_metric_names_of_dashboard_and_alerts_exist(live_service, loaded_prometheus):
    exposition = requests.get(f"{live_service}/metrics", timeout=10).text
    exported = {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
    used = dashboard_queries.service_metric_names(dashboard.OUTPUT.read_text() + ALERTS.read_text())
    assert len(used) >= 9
    assert used <= exported, f"not exported by the service: {sorted(used - exported)}"


@pytest.mark.slow
@needs_prometheus
def test_render_draws_the_key_panels_from_live_data(loaded_prometheus, tmp_path):
    out = tmp_path / "dashboard.png"
    result = run(sys.executable, OBSERVABILITY / "render.py", "--prometheus", loaded_prometheus,
                 "--minutes", "2", "--namespace", "local", "--revision", "local", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size < 250 * 1024
