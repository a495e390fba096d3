"""What every answer carries and what every request leaves on /metrics, on the app alone (no server):
the X-Request-ID and X-Revision headers, the in-flight gauge, and the latency histogram labelled by
route template, method and status.

Fast, so that mutation testing of app.py runs them for every mutant.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import EnvironBuilder

import app as app_module
from model.settings import Settings
from tests.fakes import FixedPredictor

DURATION = "sentiment_http_request_duration_seconds"
IN_FLIGHT = "sentiment_http_requests_in_flight"


def scrape(client) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def duration(samples, suffix: str, route: str, method: str, status: int) -> float:
    labels = tuple(sorted({"route": route, "method": method, "status": str(status)}.items()))
    return samples.get((f"{DURATION}_{suffix}", labels), 0.0)


@pytest.fixture
def predictor():
    return FixedPredictor()


@pytest.fixture
def client(predictor):
    return app_module.create_app(predictor, Settings()).test_client()


# --- latency histogram: one observation per request, under the route's template ----------------------


@pytest.mark.parametrize("method, path, route, status", [
    ("POST", "/predict", "/predict", 200),
    ("POST", "/project-predict", "/project-predict", 200),
    ("GET", "/health", "/health", 200),
    ("GET", "/docs", "/docs", 200),
    ("GET", "/docs/", "/docs/", 308),
    ("GET", "/docs/swagger-init.js", "/docs/<path:asset>", 200),
    ("GET", "/docs/no-such-file.js", "/docs/<path:asset>", 404),
    ("GET", "/nowhere", "unmatched", 404),
    ("GET", "/docsx", "unmatched", 404),
    ("GET", "/predict", "unmatched", 405),
    ("BREW", "/health", "unmatched", 405),
])
def test_each_request_is_observed_once_under_its_route_template_method_and_status(client, method, path, route, status):
    label_method = method if method != "BREW" else "OTHER"  # methods HTTP does not define share one label
    before = scrape(client)
    started = time.perf_counter()
    response = client.open(path, method=method, json={"text": ["x"]} if method == "POST" else None)
    elapsed = time.perf_counter() - started
    assert response.status_code == status
    after = scrape(client)
    assert duration(after, "count", route, label_method, status) - duration(before, "count", route, label_method, status) == 1
    observed = duration(after, "sum", route, label_method, status) - duration(before, "sum", route, label_method, status)
    assert 0 < observed <= elapsed


def test_a_request_the_app_crashes_on_before_answering_is_observed_as_a_500(client):
    def crashing_app(environ, start_response):
        raise RuntimeError("the app failed before it answered")

    client.application.wsgi_app.wsgi_app = crashing_app
    before = duration(scrape_another_app(), "count", "/health", "GET", 500)
    with pytest.raises(RuntimeError):
        client.get("/health")
    assert duration(scrape_another_app(), "count", "/health", "GET", 500) - before == 1


def scrape_another_app() -> dict[tuple[str, tuple], float]:
    """/metrics from a second app: the first one no longer answers."""
    return scrape(app_module.create_app(None, Settings()).test_client())


def test_the_in_flight_gauge_counts_the_request_being_served_and_drops_after_it(client, predictor):
    in_flight_seen = []
    predictor.during = lambda: in_flight_seen.append(scrape(client)[(IN_FLIGHT, ())])
    idle = scrape(client)[(IN_FLIGHT, ())]  # the /metrics request itself is in flight while it is scraped
    assert client.post("/predict", json={"text": ["x"]}).status_code == 200
    assert in_flight_seen == [idle + 1]  # the predict request and the scrape inside it
    assert scrape(client)[(IN_FLIGHT, ())] == idle


# --- X-Request-ID ------------------------------------------------------------------------------------


def test_a_supplied_request_id_is_echoed_on_the_answer(client):
    assert client.get("/health", headers={"X-Request-ID": "trace-1.a:b/c+d=e@f_g"}).headers["X-Request-ID"] == (
        "trace-1.a:b/c+d=e@f_g")


def test_a_supplied_request_id_loses_unsafe_characters_and_is_cut_to_128():
    client = app_module.create_app(None, Settings()).test_client()
    assert client.get("/health", headers={"X-Request-ID": "a b<c>;d\"e"}).headers["X-Request-ID"] == "abcde"
    long_id = "".join(f"{i:04d}" for i in range(100))
    assert client.get("/health", headers={"X-Request-ID": long_id}).headers["X-Request-ID"] == long_id[:128]


@pytest.mark.parametrize("supplied", [None, "", "<>;!"])
def test_without_a_usable_request_id_each_answer_gets_a_new_one(client, supplied):
    headers = {} if supplied is None else {"X-Request-ID": supplied}
    ids = [client.get("/health", headers=headers).headers["X-Request-ID"] for _ in range(3)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids), ids
    assert len(set(ids)) == 3
    assert len({request_id[:16] for request_id in ids}) == 1  # one process prefix, a counter after it


def test_the_request_id_of_a_500_is_the_one_on_the_answer(caplog):
    client = app_module.create_app(FixedPredictor(KeyError("bug")), Settings()).test_client()
    response = client.post("/predict", json={"text": ["x"]})
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert response.get_json() == {"detail": "internal server error", "request_id": request_id}
    assert f"unhandled error in POST /predict (request_id={request_id})" in caplog.text


# --- X-Revision --------------------------------------------------------------------------------------


def test_x_revision_appears_once_the_model_is_attached_on_every_route():
    flask_app = app_module.create_app(None, Settings())
    client = flask_app.test_client()
    assert "X-Revision" not in client.get("/health").headers
    app_module.attach_predictor(flask_app, FixedPredictor())
    for path in ("/health", "/nowhere"):
        assert client.get(path).headers.getlist("X-Revision") == ["fixed@000000000000"]


@pytest.mark.parametrize("fresh", [False, True], ids=["the app's", "a new one"])
def test_a_forked_worker_never_repeats_its_parents_request_ids(fresh):
    """Gunicorn forks its workers from one process: each must draw ids of its own."""
    ids = app_module._RequestIds() if fresh else app_module.new_request_id
    parent = [ids() for _ in range(2)]
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the worker: send two ids and leave at once, whatever happens
        try:
            os.write(writer, " ".join(ids() for _ in range(2)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        worker = pipe.read().split()
    os.waitpid(child, 0)
    assert len(worker) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in parent + worker), worker
    assert worker[0][:16] == worker[1][:16] != parent[0][:16]
    assert worker[0][16:] == f"{0:016x}"  # the worker's counter starts afresh


def test_a_request_without_path_info_is_a_404_observed_as_unmatched():
    """PEP 3333 lets a server leave PATH_INFO out for the application's root."""
    flask_app = app_module.create_app(None, Settings())
    environ = EnvironBuilder(path="/").get_environ()
    del environ["PATH_INFO"]
    before = duration(scrape_another_app(), "count", "unmatched", "GET", 404)
    statuses = []
    body = b"".join(flask_app.wsgi_app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert (statuses, body) == (["404 NOT FOUND"], b'{"detail":"not found: no such path"}')
    assert duration(scrape_another_app(), "count", "unmatched", "GET", 404) - before == 1
