"""The k6 load-test suite: scenario scripts, request texts, and the smoke run against the real service.

k6 exits 99 when a threshold fails; k6/run.sh passes that status on. The smoke test lets
run.sh start its own stack (redis-server + Gunicorn on the tiny artifact) and expects every
threshold and check to pass; the breach test points run.sh at a running service (BASE_URL
mode) with an impossible latency objective and expects the run to fail; `make loadtest` with
neither BASE_URL nor MODEL_DIR runs against the service answering on PORT (what `make run` serves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import VENV_BIN, free_port, service_env

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "k6" / "run.sh"
K6 = Path(sys.executable).parent / "k6"
SCENARIOS = ("smoke", "burst", "ramp", "cache", "batch", "admission", "coldstart")
K6_THRESHOLD_FAILED = 99


def run_scenario(scenario: str, env: dict[str, str], results_root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """Run k6/run.sh SCENARIO; return the process and the run's results directory."""
    env = {**env, "RESULTS_ROOT": str(results_root), "RUN_TIMEOUT_SECONDS": "60", "READY_TIMEOUT_SECONDS": "60"}
    process = subprocess.run([str(RUN_SH), scenario], cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    runs = sorted(results_root.glob(f"{scenario}-*"))
    assert len(runs) == 1, f"expected one results directory, found {runs}\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
    return process, runs[0]


def read_summary(results: Path) -> dict:
    return json.loads((results / "summary.json").read_text(encoding="utf-8"))


def describe(process: subprocess.CompletedProcess) -> str:
    return f"exit {process.returncode}\nstdout:\n{process.stdout[-4000:]}\nstderr:\n{process.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_smoke_passes_against_a_local_stack(tiny_artifact, tmp_path):
    env = service_env({"MODEL_DIR": str(tiny_artifact)}, tmp_path)
    env.pop("BASE_URL", None)
    process, results = run_scenario("smoke", env, tmp_path / "results")

    assert process.returncode == 0, describe(process)
    summary = read_summary(results)
    assert summary["thresholds_passed"] is True
    checks = {check["name"]: check for check in summary["checks"]}
    for name in ("status is 200", "every label once, scores sorted, sum 1", "X-Cache header present"):
        assert checks[name]["passes"] > 0 and checks[name]["fails"] == 0, checks[name]
    assert all(check["fails"] == 0 for check in checks.values()), checks
    # The runner's other outputs: k6's HTML report, the time series and its picture.
    for name in ("report.html", "timeseries.csv.gz", "timeseries.png", "summary-export.json"):
        assert (results / name).stat().st_size > 0, name


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_latency_breach_fails_the_run(service, tiny_artifact, redis_server, tmp_path):
    running = service({"MODEL_DIR": str(tiny_artifact), "REDIS_URL": redis_server.url, "CACHE_KEY_PREFIX": "k6-test:"})
    try:
        env = {**os.environ, "BASE_URL": running.base_url, "SLO_P99_MS": "0.001", "DURATION": "3s"}
        process, results = run_scenario("smoke", env, tmp_path / "results")
    finally:
        running.stop()

    assert process.returncode == K6_THRESHOLD_FAILED, describe(process)
    summary = read_summary(results)
    assert summary["thresholds_passed"] is False
    failed = [(t["metric"], t["expression"]) for t in summary["thresholds"] if not t["ok"]]
    assert failed == [("http_req_duration", "p(99)<0.001")]
    # Only the objective was missed: the answers themselves were right.
    assert all(check["fails"] == 0 for check in summary["checks"]), summary["checks"]


def predictions_served(base_url: str) -> float:
    """POST /predict answers the service itself has counted (its /metrics)."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "sentiment_http_request_duration_seconds_count" and sample.labels["route"] == "/predict")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_make_loadtest_runs_against_the_service_answering_on_port(service, tiny_artifact, redis_server, tmp_path):
    """What `make run` serves on PORT, `make loadtest` finds, without MODEL_DIR or BASE_URL."""
    running = service({"MODEL_DIR": str(tiny_artifact), "REDIS_URL": redis_server.url, "CACHE_KEY_PREFIX": "k6-found:"})
    env = {name: value for name, value in os.environ.items()
           if name not in ("MODEL_DIR", "BASE_URL", "PORT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(RESULTS_ROOT=str(tmp_path / "results"), DURATION="3s", RUN_TIMEOUT_SECONDS="60")
    venv = VENV_BIN.parent
    try:
        before = predictions_served(running.base_url)
        process = subprocess.run(
            ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/.installed", "loadtest",
             "SCENARIO=smoke", f"PORT={running.env['PORT']}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
        after = predictions_served(running.base_url)
    finally:
        running.stop()

    assert process.returncode == 0, describe(process)
    assert f"using the service running at {running.base_url}" in process.stdout
    (results,) = (tmp_path / "results").glob("smoke-*")
    assert read_summary(results)["thresholds_passed"] is True
    assert not (results / "service.log").exists(), "it started no service of its own"
    assert after - before >= 10, "the running service answered the load"


def test_runner_with_no_service_on_port_nor_model_dir_says_what_to_do(tmp_path):
    env = {name: value for name, value in os.environ.items() if name not in ("MODEL_DIR", "BASE_URL")}
    env.update(RESULTS_ROOT=str(tmp_path), PORT=str(free_port()))
    process = subprocess.run([str(RUN_SH), "smoke"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)

    assert process.returncode == 2
    assert f"no service answers on 127.0.0.1:{env['PORT']} and MODEL_DIR is not set: start one with make run" in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_has_failure_latency_and_check_thresholds(scenario):
    inspected = subprocess.run([str(K6), "inspect", str(REPO / "k6" / f"{scenario}.js")], cwd=REPO,
                               capture_output=True, text=True, timeout=60)
    assert inspected.returncode == 0, inspected.stderr
    thresholds = json.loads(inspected.stdout)["thresholds"]
    expressions = {(metric.split("{")[0], expression) for metric, rules in thresholds.items() for expression in rules}
    assert ("http_req_failed", "rate<0.001") in expressions
    assert any(metric == "http_req_duration" and rule.startswith("p(99)<") for metric, rule in expressions)
    assert any(metric == "checks" and rule in ("rate==1", "rate>0.999") for metric, rule in expressions)


def test_request_texts_are_what_their_generator_writes():
    check = subprocess.run([sys.executable, str(REPO / "k6" / "data" / "generate.py"), "--check"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    texts_file = REPO / "k6" / "data" / "texts.json"
    assert texts_file.stat().st_size < 300 * 1024
    texts = json.loads(texts_file.read_text(encoding="utf-8"))["texts"]
    word_counts = [len(text.split()) for text in texts]
    assert min(word_counts) <= 5 and max(word_counts) >= 200, "lengths should range from a few words to hundreds"
