"""Request parsing and the mapping of failures to status codes, on the app alone (no server):
body size before anything is read, content type, validation, overload, loading, draining, bugs.

Fast, so that mutation testing of app.py runs them for every mutant.
"""

from __future__ import annotations

import io

import pytest

import app as app_module
from model.batcher import Overloaded
from model.settings import Settings
from model.worker import THREAD_WAIT_KEY
from tests.fakes import FixedPredictor

LIMIT = 4096


class RecordingStream(io.RawIOBase):
    """A request body that counts how much the app read of it.

    Like a network stream, it hands over at most `piece` bytes per read (what has arrived)."""

    def __init__(self, data: bytes, piece: int = 1 << 30) -> None:
        self.data = data
        self.piece = piece
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data[self.bytes_read:self.bytes_read + min(len(buffer), self.piece)]
        buffer[:len(chunk)] = chunk
        self.bytes_read += len(chunk)
        return len(chunk)


CHUNKED = {"wsgi.input_terminated": True}  # what Gunicorn sets for a chunked body (no Content-Length)


def send(client, stream, content_type: str, **environ):
    """POST /predict with `stream` as the server's input stream, as Gunicorn hands it to the app."""
    return client.post("/predict", content_type=content_type, environ_overrides={"wsgi.input": stream, **environ})


def client_for(predictor=None, **settings):
    return app_module.create_app(predictor, Settings(**{"max_body_bytes": LIMIT, **settings})).test_client()


@pytest.fixture
def predictor():
    return FixedPredictor()


@pytest.fixture
def client(predictor):
    return client_for(predictor, max_batch_texts=4, max_text_chars=50, retry_after_seconds=7)


def detail(response, status: int):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()["detail"]


# --- body size: refused before it is read ----------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/octet-stream"])
def test_a_declared_oversized_body_is_413_without_reading_a_byte(client, predictor, content_type):
    body = RecordingStream(b"x" * (LIMIT + 1))
    response = send(client, body, content_type, CONTENT_LENGTH=str(LIMIT + 1))
    assert detail(response, 413) == f"request body larger than {LIMIT} bytes"
    assert body.bytes_read == 0
    assert predictor.seen == []


def test_a_body_of_exactly_the_limit_is_read_and_judged(client):
    padding = LIMIT - len(b'{"text": [""]}')
    data = b'{"text": ["' + b"a" * padding + b'"]}'
    assert len(data) == LIMIT
    # Read (not 413): its one text is longer than MAX_TEXT_CHARS.
    assert detail(client.post("/predict", data=data, content_type="application/json"), 422)[0]["loc"] == ["text", 0]


PIECES = pytest.mark.parametrize("piece", [1 << 30, 4096, 3000, 1000, 7],
                                 ids=["whole", "4096 a read", "3000 a read", "1000 a read", "7 a read"])


@PIECES
def test_a_streamed_body_is_read_no_further_than_one_byte_past_the_limit(client, predictor, piece):
    body = RecordingStream(b"x" * 50 * LIMIT, piece=piece)
    response = send(client, body, "application/json", **CHUNKED)
    assert detail(response, 413) == f"request body larger than {LIMIT} bytes"
    assert body.bytes_read == LIMIT + 1
    assert predictor.seen == []


@PIECES
def test_a_streamed_body_within_the_limit_is_served(client, predictor, piece):
    body = RecordingStream(b'{"text": ["streamed in pieces", "of seven bytes"]}', piece=piece)
    response = send(client, body, "application/json", **CHUNKED)
    assert response.status_code == 200
    assert predictor.seen == [["streamed in pieces", "of seven bytes"]]


def test_a_streamed_body_of_exactly_the_limit_is_read_and_judged(client):
    data = b'{"text": ["' + b"a" * (LIMIT - len(b'{"text": [""]}')) + b'"]}'
    response = send(client, RecordingStream(data, piece=1000), "application/json", **CHUNKED)
    # Read (not 413): its one text is longer than MAX_TEXT_CHARS.
    assert detail(response, 422)[0]["loc"] == ["text", 0]


def test_no_more_than_the_declared_length_is_read(client, predictor):
    payload = b'{"text": ["declared"]}'
    body = RecordingStream(payload + b"GET /next-request HTTP/1.1", piece=1 << 16)
    response = send(client, body, "application/json", CONTENT_LENGTH=str(len(payload)))
    assert response.status_code == 200
    assert predictor.seen == [["declared"]]
    assert body.bytes_read == len(payload)


def test_a_body_without_length_or_framing_is_empty(client):
    response = send(client, io.BytesIO(b'{"text": ["x"]}'), "application/json")
    assert detail(response, 400).startswith("body is not valid JSON")


# --- content type --------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/merge-patch+json", "application/vnd.sentiment+json"])
def test_json_and_json_suffix_types_are_accepted(client, content_type):
    assert client.post("/predict", data=b'{"text": ["ok"]}', content_type=content_type).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "text/json", "application/jsonx", "application/x-json-seq",
                                          "multipart/form-data", "json"])
def test_other_types_are_415(client, content_type):
    response = client.post("/predict", data=b'{"text": ["ok"]}', headers={"Content-Type": content_type})
    assert detail(response, 415) == "Content-Type must be application/json"


def test_a_body_without_a_content_type_is_415(client, predictor):
    response = client.post("/predict", data=b'{"text": ["ok"]}')
    assert "Content-Type" not in response.request.headers
    assert detail(response, 415) == "Content-Type must be application/json"
    assert predictor.seen == []


# --- validation: 422 with one entry per problem ------------------------------------------------------


def test_each_invalid_text_is_named_by_its_position(client):
    issues = detail(client.post("/predict", json={"text": ["fine", "", "   ", "y" * 51]}), 422)
    assert [(issue["loc"], issue["type"]) for issue in issues] == [
        (["text", 1], "string_too_short"), (["text", 2], "string_blank"), (["text", 3], "string_too_long"),
    ]
    assert all(set(issue) == {"loc", "msg", "type"} for issue in issues)
    assert issues[1]["msg"] == "Text must contain a character other than whitespace"


@pytest.mark.parametrize("body, loc, kind", [
    ({"text": []}, ["text"], "too_short"),
    ({"text": ["a"] * 5}, ["text"], "too_long"),
    ({}, ["text"], "missing"),
    ({"text": ["a"], "extra": 1}, ["extra"], "extra_forbidden"),
    ({"text": 3}, ["text"], "list_type"),
    ([], [], "model_type"),
])
def test_the_shape_of_the_body_is_checked(client, body, loc, kind):
    (issue,) = detail(client.post("/predict", json=body), 422)
    assert (issue["loc"], issue["type"]) == (loc, kind)


def test_the_limits_of_the_deployment_are_the_boundaries(client, predictor):
    assert client.post("/predict", json={"text": ["a"] * 4}).status_code == 200
    assert client.post("/predict", json={"text": ["y" * 50]}).status_code == 200
    assert predictor.seen == [["a"] * 4, ["y" * 50]]


def test_a_single_string_reaches_the_predictor_as_a_list_of_one(client, predictor):
    body = client.post("/predict", json={"text": "one sentence"}).get_json()
    assert predictor.seen == [["one sentence"]]
    assert body == {"predictions": [[{"label": "POSITIVE", "score": 0.75}, {"label": "NEGATIVE", "score": 0.25}]],
                    "model": "fixed@000000000000"}


# --- failures of the service ---------------------------------------------------------------------


def test_a_bug_is_a_500_with_the_request_id_and_nothing_internal(caplog):
    client = client_for(FixedPredictor(KeyError("secret internal detail")))
    response = client.post("/predict", json={"text": ["x"]}, headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.get_json() == {"detail": "internal server error", "request_id": "req-500"}
    assert "secret" not in response.get_data(as_text=True)
    assert "req-500" in caplog.text and "secret internal detail" in caplog.text  # the log has the details


def test_overload_is_a_503_with_retry_after_and_the_reason():
    client = client_for(FixedPredictor(Overloaded("9 texts are queued (limit 8)")), retry_after_seconds=3)
    response = client.post("/predict", json={"text": ["x"]})
    assert detail(response, 503) == "overloaded: 9 texts are queued (limit 8)"
    assert response.headers["Retry-After"] == "3"


def test_the_wait_for_a_thread_the_server_measured_reaches_the_predictor(client, predictor):
    """Admission counts the wait for a request thread the worker measured (model/worker.py); under
    a server without it (this test client, another WSGI server) it is none."""
    client.post("/predict", json={"text": ["x"]}, environ_overrides={THREAD_WAIT_KEY: 0.25})
    client.post("/predict", json={"text": ["y"]})
    assert predictor.thread_waits == [0.25, 0.0]


def test_loading_then_ready_then_draining():
    flask_app = app_module.create_app(settings=Settings(retry_after_seconds=2))
    client = flask_app.test_client()
    for response in (client.get("/ready"), client.post("/predict", json={"text": ["x"]})):
        assert detail(response, 503) == "the model is still loading"
        assert response.headers["Retry-After"] == "2"
    assert client.get("/health").get_json() == {"status": "ok"}
    app_module.attach_predictor(flask_app, FixedPredictor())
    assert client.get("/ready").get_json() == {"status": "ready", "model": "fixed@000000000000", "cache": "disabled"}
    assert client.post("/predict", json={"text": ["x"]}).status_code == 200
    app_module.start_draining(flask_app)
    for response in (client.get("/ready"), client.post("/predict", json={"text": ["x"]})):
        assert detail(response, 503) == "the service is shutting down"
        assert response.headers["Retry-After"] == "2"


def test_unknown_paths_and_methods_are_json(client):
    assert detail(client.get("/nowhere"), 404) == "not found: no such path"
    response = client.get("/predict")
    assert detail(response, 405) == "method GET is not allowed here"
    assert response.headers["Allow"] == "OPTIONS, POST"


def test_x_revision_is_k_revision_when_set_else_the_model_string():
    assert client_for(FixedPredictor(), k_revision="sentiment-00007").post(
        "/predict", json={"text": ["x"]}).headers["X-Revision"] == "sentiment-00007"
    assert client_for(FixedPredictor()).post("/predict", json={"text": ["x"]}).headers["X-Revision"] == "fixed@000000000000"
    assert "X-Revision" not in client_for().get("/health").headers


def test_the_cache_status_is_the_x_cache_header(client):
    assert client.post("/predict", json={"text": ["x"]}).headers["X-Cache"] == "miss"
