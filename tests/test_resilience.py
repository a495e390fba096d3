"""Failure is normal: Redis down or frozen, overload, SIGTERM mid-batch, bad configuration."""

from __future__ import annotations

import re
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import wait_until

pytestmark = pytest.mark.slow

# Redis must not slow an answer past this: a frozen Redis costs one short socket timeout, then
# the breaker keeps it out of the path. A client timeout, not a timing assertion: a request
# that hangs on Redis fails here.
CLIENT_TIMEOUT = 2.0


def post(service, texts, timeout=CLIENT_TIMEOUT, session=requests):
    return session.post(service.url("/predict"), json={"text": texts}, timeout=timeout)


def metric(service, name: str) -> float:
    text = requests.get(service.url("/metrics"), timeout=10).text
    return sum(float(value) for value in re.findall(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE))


@pytest.fixture(scope="module")
def private_redis(redis_factory):
    server = redis_factory()
    yield server
    server.thaw()


@pytest.fixture(scope="module")
def cached_service(service, tiny_artifact, private_redis):
    handle = service({"MODEL_DIR": tiny_artifact, "REDIS_URL": private_redis.url, "CACHE_RETRY_SECONDS": "0.5"})
    yield handle
    handle.stop()


def requests_flowing(service, texts, count=20):
    """`count` requests one after another, like live traffic; every one must answer in time."""
    with requests.Session() as session:
        return [post(service, texts, session=session) for _ in range(count)]


def test_a_stopped_redis_is_served_around_then_used_again(cached_service, private_redis):
    assert post(cached_service, ["kept across outages"]).headers["X-Cache"] == "miss"
    assert post(cached_service, ["kept across outages"]).headers["X-Cache"] == "hit"
    errors_before = metric(cached_service, 'sentiment_cache_errors_total{operation="get"}')
    private_redis.stop()
    try:
        answers = requests_flowing(cached_service, ["kept across outages", "a new one"])
        assert {response.status_code for response in answers} == {200}
        assert {response.headers["X-Cache"] for response in answers} == {"bypass"}
        ready = requests.get(cached_service.url("/ready"), timeout=CLIENT_TIMEOUT)
        assert (ready.status_code, ready.json()["cache"]) == (200, "unavailable")
        assert metric(cached_service, 'sentiment_cache_errors_total{operation="get"}') > errors_before
    finally:
        private_redis.start()
    # Redis came back empty (no persistence): first a miss, then hits again.
    wait_until(lambda: post(cached_service, ["after the outage"]).headers["X-Cache"] != "bypass", 15,
               "the service to use Redis again", interval=0.2)
    assert post(cached_service, ["after the outage"]).headers["X-Cache"] == "hit"
    assert requests.get(cached_service.url("/ready"), timeout=CLIENT_TIMEOUT).json()["cache"] == "ok"


def test_a_frozen_redis_is_served_around_then_hits_come_back(cached_service, private_redis):
    post(cached_service, ["cached before the freeze"])
    assert post(cached_service, ["cached before the freeze"]).headers["X-Cache"] == "hit"
    private_redis.freeze()
    try:
        answers = requests_flowing(cached_service, ["cached before the freeze", "another"])
        assert {response.status_code for response in answers} == {200}
        assert {response.headers["X-Cache"] for response in answers} == {"bypass"}
    finally:
        private_redis.thaw()
    def cached_again():
        response = post(cached_service, ["cached before the freeze"])
        return response.status_code == 200 and response.headers["X-Cache"] == "hit"

    wait_until(cached_again, 15, "cache hits to come back", interval=0.2)


def test_overload_is_shed_with_503_and_retry_after(service, tiny_artifact):
    overloadable = service({"MODEL_DIR": tiny_artifact, "QUEUE_MAX_TEXTS": "4", "BATCH_MAX_TEXTS": "1",
                            "RETRY_AFTER_SECONDS": "2"})
    try:
        too_many = post(overloadable, [f"text {n}" for n in range(5)])  # more than the queue can ever hold
        assert too_many.status_code == 503
        assert too_many.headers["Retry-After"] == "2"
        assert "overloaded" in too_many.json()["detail"]

        long_texts = [" ".join(["sentence"] * 300) + f" {n}" for n in range(3)]
        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(lambda _: post(overloadable, long_texts, timeout=60), range(48)))
        statuses = {response.status_code for response in answers}
        assert statuses <= {200, 503}
        assert all(r.headers.get("Retry-After") == "2" for r in answers if r.status_code == 503)
        assert requests.get(overloadable.url("/ready"), timeout=10).status_code == 200
        assert post(overloadable, ["still serving"]).status_code == 200
    finally:
        overloadable.stop()


def test_sigterm_finishes_the_running_batch_reports_draining_and_exits_0(service, tiny_artifact):
    """Two workers (multiprocess metrics); a large request is in flight when SIGTERM arrives."""
    draining = service({"MODEL_DIR": tiny_artifact, "WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "4",
                        "BATCH_MAX_TEXTS": "2", "GRACEFUL_TIMEOUT_SECONDS": "60"})
    big = [f"{n} " + "a long sentence about a film that goes on " * 450 for n in range(24)]
    outcome: dict[str, requests.Response] = {}
    sender = threading.Thread(target=lambda: outcome.setdefault("big", post(draining, big, timeout=120)))
    prober = requests.Session()
    assert prober.get(draining.url("/ready"), timeout=10).status_code == 200  # a kept-alive connection
    sender.start()
    # Its first engine batch has run: the request is past admission and in the batcher, many batches to go.
    wait_until(lambda: metric(draining, "sentiment_batch_size_texts_count") >= 1, 60, "the big request's first batch")

    assert sender.is_alive(), "the big request ended before SIGTERM: make it bigger"
    draining.process.send_signal(signal.SIGTERM)
    ready_statuses = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and 503 not in ready_statuses:
        try:
            ready_statuses.append(prober.get(draining.url("/ready"), timeout=2).status_code)
        except requests.RequestException:
            break
        time.sleep(0.05)
    sender.join(timeout=120)
    assert draining.process.wait(timeout=90) == 0
    assert 503 in ready_statuses
    response = outcome["big"]
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == len(big)
    assert "Traceback" not in draining.log()


def test_multiple_workers_share_one_metrics_view(service, tiny_artifact):
    multi = service({"MODEL_DIR": tiny_artifact, "WEB_CONCURRENCY": "2"})
    try:
        for n in range(20):
            assert post(multi, [f"spread over workers {n}"], session=requests.Session()).status_code == 200
        served = 'sentiment_http_request_duration_seconds_count{method="POST",route="/predict",status="200"}'
        assert metric(multi, served) == 20
        assert metric(multi, 'sentiment_texts_total{source="computed"}') == 20
    finally:
        assert multi.stop() == 0


@pytest.mark.parametrize("name, value", [
    ("WEB_CONCURRENCY", "0"), ("PORT", "70000"), ("MAX_BATCH_TEXTS", "many"), ("BACKEND", "tensorflow"), ("REDIS_URL", "http://redis"),
])
def test_a_bad_environment_variable_stops_start_up_with_one_line(service, name, value):
    broken = service({name: value}, ready=False)
    assert broken.process.wait(timeout=60) == 2
    lines = broken.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert name in lines[0] and "Traceback" not in lines[0]


def test_a_missing_model_dir_stops_the_service_with_one_clear_line(service, tmp_path):
    missing = tmp_path / "no-such-model"
    broken = service({"MODEL_DIR": missing}, ready=False)
    assert broken.process.wait(timeout=60) != 0
    log = broken.log()
    assert "Traceback" not in log
    reasons = [line for line in log.splitlines() if "cannot load the model" in line]
    assert len(reasons) == 1 and f"MODEL_DIR={missing}" in reasons[0]
    assert log.count("Booting worker") == 1  # stopped, not restarted in a loop
