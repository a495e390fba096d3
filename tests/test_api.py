"""The HTTP contract (shared API.md), row by row, against real Gunicorn + real engine + real Redis."""

from __future__ import annotations

import json
import math
import re
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import API_MAX_BODY_BYTES, THREE_LABELS
from tests.reference import as_dict, distinct_answers, softmax_by_label

pytestmark = pytest.mark.slow

TIMEOUT = 30
TORCH_TOLERANCE = 1e-4  # ONNX Runtime fp32 against torch fp32 on the same checkpoint


def post(service, body, path="/predict", **options) -> requests.Response:
    return requests.post(service.url(path), json=body, timeout=TIMEOUT, **options)


def ranked_ok(ranked: list[dict], labels) -> None:
    assert [set(entry) for entry in ranked] == [{"label", "score"}] * len(labels)
    assert sorted(entry["label"] for entry in ranked) == sorted(labels)
    scores = [entry["score"] for entry in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= score <= 1 for score in scores)
    assert math.isclose(sum(scores), 1.0, abs_tol=1e-4)


@pytest.fixture(scope="module")
def manifest(tiny_artifact) -> dict:
    return json.loads((tiny_artifact / "manifest.json").read_text())


@pytest.fixture(scope="module")
def three_label_service(service, tiny_checkpoint_3labels):
    """A plain checkpoint (exported on first start) with custom labels; no Redis, no K_REVISION.

    fp32, so that a text's scores do not depend on its batch neighbours (dynamic int8 does)."""
    handle = service({"MODEL_DIR": tiny_checkpoint_3labels, "PRECISION": "fp32"})
    yield handle
    handle.stop()


# --- answers ---------------------------------------------------------------------------------


def test_every_text_gets_every_label_in_input_order(api_service, manifest, tiny_checkpoint):
    """Each text's scores are its own softmax, computed here with torch from the checkpoint."""
    texts = ["I love you!", "I hate you!", "I am a k8s Cluster!"]
    reference = softmax_by_label(tiny_checkpoint, texts)
    assert distinct_answers(reference, margin=TORCH_TOLERANCE), "the texts score alike: pick other texts"
    response = post(api_service, {"text": texts})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"predictions", "model"}
    assert body["model"] == f"{manifest['model_id']}@{manifest['fingerprint'][:12]}"
    assert len(body["predictions"]) == 3
    for ranked, expected in zip(body["predictions"], reference, strict=True):
        ranked_ok(ranked, manifest["labels"])
        assert as_dict(ranked) == pytest.approx(expected, abs=TORCH_TOLERANCE)


def test_duplicates_are_each_answered(api_service):
    body = post(api_service, {"text": ["same words", "other words", "same words", "same words"]}).json()
    predictions = body["predictions"]
    assert len(predictions) == 4
    assert predictions[0] == predictions[2] == predictions[3]


def test_the_project_predict_alias_answers_like_predict(api_service):
    alias = post(api_service, {"text": ["alias check"]}, path="/project-predict")
    assert alias.status_code == 200
    assert alias.json() == post(api_service, {"text": ["alias check"]}).json()
    assert {"X-Cache", "X-Request-ID", "X-Revision"} <= set(alias.headers)


def test_labels_come_from_the_model_config(three_label_service, tiny_checkpoint_3labels):
    """Each label carries the probability of its own index in config.json's id2label."""
    texts = ["a joyful day", "an angry rant", "a table"]
    response = post(three_label_service, {"text": texts})
    assert response.status_code == 200
    for ranked, expected in zip(response.json()["predictions"], softmax_by_label(tiny_checkpoint_3labels, texts)):
        ranked_ok(ranked, THREE_LABELS)
        assert as_dict(ranked) == pytest.approx(expected, abs=TORCH_TOLERANCE)


def test_texts_longer_than_the_model_window_are_truncated_not_rejected(api_service):
    long_text = " ".join(["wonderful"] * 1500)[:2000]
    response = post(api_service, {"text": [long_text, "short"]})
    assert response.status_code == 200
    ranked_ok(response.json()["predictions"][0], ("NEGATIVE", "POSITIVE"))


def test_concurrent_requests_each_get_their_own_answer(three_label_service, tiny_checkpoint_3labels):
    """64 requests at once, batched together inside the service: each text gets its own softmax,
    computed here with torch from the checkpoint (texts of many lengths, so batches are padded)."""
    bodies = [{"text": [f"request number {n} says {'good ' * (n % 7)}things", f"and {n} more"]} for n in range(64)]
    texts = [text for body in bodies for text in body["text"]]
    reference = dict(zip(texts, softmax_by_label(tiny_checkpoint_3labels, texts)))

    def send(body):
        with requests.Session() as session:
            return session.post(three_label_service.url("/predict"), json=body, timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=64) as pool:
        together = list(pool.map(send, bodies))
    for body, response in zip(bodies, together):
        assert response.status_code == 200
        answer = response.json()["predictions"]
        assert len(answer) == len(body["text"])
        for text, got in zip(body["text"], answer, strict=True):
            assert as_dict(got) == pytest.approx(reference[text], abs=TORCH_TOLERANCE)


# --- headers -----------------------------------------------------------------------------------


def test_request_id_is_echoed(api_service):
    response = post(api_service, {"text": ["id"]}, headers={"X-Request-ID": "trace-123.abc"})
    assert response.headers["X-Request-ID"] == "trace-123.abc"


def test_request_id_is_generated_when_absent_and_unique(api_service):
    first, second = post(api_service, {"text": ["id"]}), post(api_service, {"text": ["id"]})
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_an_echoed_request_id_is_sanitized_and_bounded(api_service):
    response = post(api_service, {"text": ["id"]}, headers={"X-Request-ID": "abc<script>;" + "x" * 500})
    echoed = response.headers["X-Request-ID"]
    assert echoed.startswith("abcscript")
    assert len(echoed) == 128
    assert re.fullmatch(r"[A-Za-z0-9._:/+=@-]+", echoed)


def test_x_revision_is_k_revision_when_set(api_service):
    assert post(api_service, {"text": ["rev"]}).headers["X-Revision"] == "sentiment-00042"


def test_x_revision_is_the_model_string_otherwise(three_label_service):
    response = post(three_label_service, {"text": ["rev"]})
    assert response.headers["X-Revision"] == response.json()["model"]


# --- cache ---------------------------------------------------------------------------------------


def test_miss_then_hit_with_identical_scores(api_service):
    body = {"text": ["cache me once", "cache me twice"]}
    first, second = post(api_service, body), post(api_service, body)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert second.json() == first.json()


def test_partial_when_some_texts_are_cached(api_service):
    post(api_service, {"text": ["partly known"]})
    response = post(api_service, {"text": ["partly known", "entirely new text"]})
    assert response.headers["X-Cache"] == "partial"


def test_entries_have_the_prefix_and_the_ttl(api_service, redis_server):
    client = redis_server.client()
    before = set(client.keys("*"))
    post(api_service, {"text": ["ttl one", "ttl two", "ttl one"]})
    new_keys = set(client.keys("*")) - before
    assert len(new_keys) == 2
    for key in new_keys:
        assert key.startswith(b"api-test:")
        assert 0 < client.ttl(key) <= 3600


def test_another_precision_never_serves_these_entries(api_service, service, tiny_artifact, redis_server):
    text = {"text": ["shared between precisions"]}
    post(api_service, text)
    assert post(api_service, text).headers["X-Cache"] == "hit"
    int8 = service({"MODEL_DIR": tiny_artifact, "PRECISION": "int8", "REDIS_URL": redis_server.url,
                    "CACHE_KEY_PREFIX": "api-test:"})
    try:
        response = post(int8, text)
        assert response.headers["X-Cache"] == "miss"
        assert post(int8, text).headers["X-Cache"] == "hit"
    finally:
        int8.stop()


def test_without_redis_answers_are_bypass_and_ready_says_disabled(three_label_service):
    assert post(three_label_service, {"text": ["no cache"]}).headers["X-Cache"] == "bypass"
    ready = requests.get(three_label_service.url("/ready"), timeout=TIMEOUT).json()
    assert ready["cache"] == "disabled"


# --- errors: always JSON, precise, never a traceback ------------------------------------------------


def error_body(response: requests.Response, status: int):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers.get("X-Request-ID")
    return response.json()["detail"]


def raw_post(service, data, content_type="application/json", **options):
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(service.url("/predict"), data=data, headers=headers, timeout=TIMEOUT, **options)


@pytest.mark.parametrize("data", [b'{"text": [', b"not json", b'{"text": "\xff\xfe"}', b""])
def test_400_when_the_body_is_not_json(api_service, data):
    assert "not valid JSON" in error_body(raw_post(api_service, data), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_415_when_the_content_type_is_not_json(api_service, content_type):
    detail = error_body(raw_post(api_service, b'{"text": ["x"]}', content_type), 415)
    assert "application/json" in detail


def test_413_with_content_length(api_service):
    body = json.dumps({"text": ["x" * (API_MAX_BODY_BYTES + 10)]}).encode()
    assert str(API_MAX_BODY_BYTES) in error_body(raw_post(api_service, body), 413)


def test_413_for_a_streamed_body_without_content_length(api_service):
    def chunks():
        yield b'{"text": ["'
        for _ in range(API_MAX_BODY_BYTES // 65536 + 2):
            yield b"y" * 65536
        yield b'"]}'

    response = raw_post(api_service, chunks())
    assert "Content-Length" not in response.request.headers
    assert str(API_MAX_BODY_BYTES) in error_body(response, 413)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_413_arrives_before_the_body_is_sent(api_service, content_type):
    """Headers announcing a body over the limit, and no body: the answer must not wait for it."""
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {API_MAX_BODY_BYTES * 8}\r\n\r\n")
    port = int(api_service.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as connection:
        connection.sendall(head.encode())
        status_line = connection.makefile("rb").readline()
    assert status_line.startswith(b"HTTP/1.1 413 "), status_line


def test_a_streamed_body_within_the_limit_is_served(api_service):
    response = raw_post(api_service, iter([b'{"text": ', b'["streamed"]}']))
    assert response.status_code == 200


@pytest.mark.parametrize("body, loc, error_type", [
    ({}, ["text"], "missing"),
    ({"text": ["ok"], "extra": 1}, ["extra"], "extra_forbidden"),
    ({"text": []}, ["text"], "too_short"),
    ({"text": ["t"] * 33}, ["text"], "too_long"),
    ({"text": ["a", "b", "c", "   \n\t"]}, ["text", 3], "string_blank"),
    ({"text": ["a", ""]}, ["text", 1], "string_too_short"),
    ({"text": ["a", "z" * 2001]}, ["text", 1], "string_too_long"),
    ({"text": ["a", 7]}, ["text", 1], "string_type"),
    ({"text": "   "}, ["text", 0], "string_blank"),
    ({"text": None}, ["text"], "list_type"),
    (["text"], [], "model_type"),
])
def test_422_names_the_problem(api_service, body, loc, error_type):
    detail = error_body(post(api_service, body), 422)
    assert isinstance(detail, list) and detail
    assert all(set(issue) == {"loc", "msg", "type"} for issue in detail)
    assert {"loc": loc, "type": error_type} in [{"loc": i["loc"], "type": i["type"]} for i in detail]


def test_422_does_not_echo_huge_input(api_service):
    response = post(api_service, {"text": ["a", "z" * 2001]})
    assert len(response.content) < 500


# --- probes and metrics --------------------------------------------------------------------------


def test_health_and_ready(api_service, manifest):
    health = requests.get(api_service.url("/health"), timeout=TIMEOUT)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = requests.get(api_service.url("/ready"), timeout=TIMEOUT)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": f"{manifest['model_id']}@{manifest['fingerprint'][:12]}",
                            "cache": "ok"}


def test_metrics_expose_the_service_figures(api_service):
    post(api_service, {"text": ["metrics text"]})
    for n in range(5):
        requests.get(api_service.url(f"/random/path/{n}"), timeout=TIMEOUT)
    text = requests.get(api_service.url("/metrics"), timeout=TIMEOUT).text
    bucket = 'sentiment_http_request_duration_seconds_bucket{le="0.001",method="POST",route="/predict",status="200"}'
    assert bucket in text
    routes = set(re.findall(r'sentiment_http_request_duration_seconds_count\{[^}]*route="([^"]+)"', text))
    assert not any(route.startswith("/random") for route in routes)
    assert "unmatched" in routes
    for name in ("sentiment_http_requests_in_flight", "sentiment_batch_size_texts_bucket",
                 "sentiment_queue_wait_seconds_bucket", "sentiment_inference_duration_seconds_bucket",
                 'sentiment_texts_total{source="computed"}', 'sentiment_texts_total{source="cache"}',
                 'sentiment_cache_errors_total{operation="get"}'):
        assert name in text
    for phase in ("imports", "model_load", "warmup", "ready"):
        assert f'sentiment_startup_seconds{{phase="{phase}"}}' in text
    assert re.search(r'sentiment_build_info\{[^}]*k_revision="sentiment-00042"[^}]*precision="fp32"[^}]*\} 1\.0', text)
    from model.cpu import int8_isa

    assert re.search(rf'sentiment_build_info\{{[^}}]*isa="{int8_isa()}"[^}}]*\}} 1\.0', text)
