"""HTTP layer of the sentiment service: Flask app factory, routes, error handlers.

This module knows HTTP and nothing of tensors: it validates requests with Pydantic, hands texts
to one predictor object, and turns answers and failures into JSON. `gunicorn app:app` serves
the module-level `app`, built on first access; gunicorn.conf.py loads the predictor in each
worker after fork and attaches it with `attach_predictor`. An app without a predictor answers
503 + Retry-After on /ready and predict.
"""

from __future__ import annotations

import codecs
import functools
import itertools
import json
import logging
import math
import re
import sys
import time
import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from flask import Flask, Response, current_app, redirect, request, send_from_directory
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES, parse_options_header
from werkzeug.wsgi import get_content_length

from model import metrics
from model.batcher import Overloaded
from model.settings import Settings, load_settings
from model.worker import THREAD_WAIT_KEY
from openapi import DOCS_INIT_SCRIPT, DOCS_PAGE, openapi_document

log = logging.getLogger("sentiment.http")

SERVICE_NAME = "sentiment"
PREDICT_ROUTES = ("/predict", "/project-predict")
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REQUEST_ID_ALLOWED = re.compile(r"[^A-Za-z0-9._:/+=@-]")
REQUEST_ID_MAX_CHARS = 128
REQUEST_ID_KEY = "sentiment.request_id"  # where the WSGI environ carries the request's id
# "Not blank" means: contains a character outside this whitespace set. Spelled out so that the
# pattern means the same in Python, in JSON Schema (ECMA regex) and to schema-driven clients.
NOT_BLANK_PATTERN = (
    r"[^\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
)
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)


# --- payloads ------------------------------------------------------------------------------


class LabelScore(BaseModel):
    label: str = Field(description="A label of the model (its config's id2label).")
    score: float = Field(ge=0, le=1, description="Softmax probability of the label.")


class PredictResponse(BaseModel):
    predictions: list[list[LabelScore]] = Field(
        description="One list per input text, in input order; each names every label once, highest score first."
    )
    model: str = Field(description="<model id>@<short fingerprint of the weights>.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong, for a human.")


class ServerErrorResponse(BaseModel):
    detail: str
    request_id: str = Field(description="Quote it when reporting the problem; the server log has the details.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where in the body: e.g. [\"text\", 3] is the fourth text.")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationIssue]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    model: str
    cache: Literal["ok", "unavailable", "disabled"]


# Every answer's model, for the OpenAPI document (openapi.py).
ANSWERS = (PredictResponse, ErrorResponse, ServerErrorResponse, ValidationErrorResponse, HealthResponse, ReadyResponse)


def _require_not_blank(text: str) -> str:
    if not _NOT_BLANK.search(text):
        raise PydanticCustomError("string_blank", "Text must contain a character other than whitespace")
    return text


def _document_single_string_form(schema: dict[str, Any]) -> None:
    """`text` also takes one string: say so in the schema (anyOf the item and the list)."""
    listed = schema["properties"]["text"]
    meta = {key: listed.pop(key) for key in ("title", "description") if key in listed}
    schema["properties"]["text"] = {"anyOf": [listed["items"], listed], **meta}


def make_predict_request(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The request model with the limits of this deployment (MAX_BATCH_TEXTS, MAX_TEXT_CHARS)."""
    Text = Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_chars),
        AfterValidator(_require_not_blank),
        Field(json_schema_extra={"pattern": NOT_BLANK_PATTERN}),
    ]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra=_document_single_string_form)

        text: list[Text] = Field(
            min_length=1,
            max_length=max_texts,
            description=f"1..{max_texts} texts of 1..{max_chars} characters, not only whitespace; "
            "or a single string. Texts longer than the model's window are truncated.",
        )

        @field_validator("text", mode="before")
        @classmethod
        def _single_string_is_a_list_of_one(cls, value: Any) -> Any:
            return [value] if isinstance(value, str) else value

    return PredictRequest


# --- service state -------------------------------------------------------------------------


@dataclass
class ServiceState:
    """What the routes need besides the request: the predictor (None while loading), draining."""

    settings: Settings
    predict_request: type[BaseModel]
    openapi: dict[str, Any]
    predictor: Any = None
    draining: bool = False

    def revision(self) -> str | None:
        """X-Revision: the Knative revision when set, else the model string (once loaded)."""
        if self.settings.k_revision:
            return self.settings.k_revision
        return self.predictor.model_string if self.predictor is not None else None


def state() -> ServiceState:
    return current_app.extensions[SERVICE_NAME]


def attach_predictor(app: Flask, predictor) -> None:
    """Make the app ready: from now on /ready says 200 and predict answers."""
    app.extensions[SERVICE_NAME].predictor = predictor


def start_draining(app: Flask) -> None:
    """Shutdown began: /ready answers 503 so no new work is routed here."""
    app.extensions[SERVICE_NAME].draining = True


class ApiError(Exception):
    def __init__(self, status: int, detail: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def unavailable(settings: Settings, detail: str) -> ApiError:
    return ApiError(503, detail, {"Retry-After": str(settings.retry_after_seconds)})


def json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(body), status=status, headers=headers, mimetype="application/json")


def start_json(start_response, payload: bytes, status: int, headers: dict[str, str]) -> list[bytes]:
    """A JSON answer straight to the WSGI server: the predict route's, which has no Flask Response."""
    start_response(f"{status} {HTTP_STATUS_CODES[status].upper()}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers.items()])
    return [payload]


def error_answer(error: Exception, settings: Settings, environ: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """The one mapping of failures to answers (body, status, headers), for every route.

    ApiError says its own; an HTTP error of Werkzeug (404, 405, 413, ...) gets a JSON detail;
    anything else is a 500 that names the request id the log line carries.
    """
    if isinstance(error, ApiError):
        return {"detail": error.detail}, error.status, error.headers
    if isinstance(error, HTTPException):
        headers = {}
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers["Allow"] = ", ".join(sorted(error.valid_methods))
        detail = {
            404: "not found: no such path",
            405: f"method {environ.get('REQUEST_METHOD', '')[:16]} is not allowed here",
            413: f"request body larger than {settings.max_body_bytes} bytes",
        }.get(error.code or 500, error.name)
        return {"detail": detail}, error.code or 500, headers
    request_id = environ.get(REQUEST_ID_KEY) or new_request_id()
    log.exception("unhandled error in %s %s (request_id=%s)", environ.get("REQUEST_METHOD", "")[:16],
                  environ.get("PATH_INFO", "")[:200], request_id)
    return {"detail": "internal server error", "request_id": request_id}, 500, {}


# --- app factory ---------------------------------------------------------------------------


def create_app(predictor=None, settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__)
    predict_request = make_predict_request(settings.max_batch_texts, settings.max_text_chars)
    app.extensions[SERVICE_NAME] = ServiceState(
        settings=settings, predict_request=predict_request, openapi=openapi_document(predict_request, ANSWERS)
    )
    if predictor is not None:
        attach_predictor(app, predictor)
    _register_error_handlers(app)
    _register_routes(app)
    app.wsgi_app = _WsgiEntry(app)
    return app


class _WsgiEntry:
    """WSGI entry of the app: request id and X-Revision headers, in-flight gauge, latency; and
    POST on the predict routes, answered here without Flask's dispatch.

    One call around each request rather than Flask's before/after/teardown hooks and `g`, which
    add their dispatch to every cache hit. A predict request needs nothing of Flask's request
    context, URL matching or Response object: skipping them makes a cache hit about 30%
    cheaper (docs/performance.md); every other request, and every other method on the predict
    paths, goes through Flask. The route label is the URL rule the path matches, "unmatched"
    for a 404 or 405 of Flask's routing.
    """

    def __init__(self, app: Flask) -> None:
        self.wsgi_app = app.wsgi_app
        self.state: ServiceState = app.extensions[SERVICE_NAME]
        rules = [rule.rule for rule in app.url_map.iter_rules()]
        self.exact = {rule: rule for rule in rules if "<" not in rule}
        self.prefixed = [(rule[:rule.index("<")], rule) for rule in rules if "<" in rule]

    def __call__(self, environ: dict[str, Any], start_response):
        started = time.perf_counter()
        request_id = environ[REQUEST_ID_KEY] = _request_id(environ.get("HTTP_X_REQUEST_ID"))
        status = 500

        def start_with_headers(status_line: str, headers: list[tuple[str, str]], exc_info=None):
            nonlocal status
            status = int(status_line[:3])
            headers.append(("X-Request-ID", request_id))
            revision = self.state.revision()
            if revision:
                headers.append(("X-Revision", revision))
            return start_response(status_line, headers, exc_info)

        metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") in PREDICT_ROUTES:
                return self.predict(environ, start_with_headers)
            return self.wsgi_app(environ, start_with_headers)
        finally:
            metrics.HTTP_REQUESTS_IN_FLIGHT.dec()
            method = environ.get("REQUEST_METHOD", "")
            metrics.HTTP_DURATIONS.observe(self.route(environ.get("PATH_INFO", ""), status),
                                           method if method in KNOWN_METHODS else "OTHER", status,
                                           time.perf_counter() - started)

    def predict(self, environ: dict[str, Any], start_response) -> list[bytes]:
        try:
            body, headers = predict_answer(self.state, environ)
            payload, status = json_bytes(body), 200  # inside: a score JSON cannot carry is a 500 too
        except Exception as error:  # noqa: BLE001  (mapped as Flask's handler maps it: error_answer)
            body, status, headers = error_answer(error, self.state.settings, environ)
            payload = json_bytes(body)
        return start_json(start_response, payload, status, headers)

    def route(self, path: str, status: int) -> str:
        if status == 405:
            return "unmatched"  # Flask's routing refused the method: no rule was matched
        rule = self.exact.get(path)
        if rule is not None:
            return rule
        return next((rule for prefix, rule in self.prefixed if path.startswith(prefix) and len(path) > len(prefix)),
                    "unmatched")


def _request_id(supplied: str | None) -> str:
    """Echo the caller's id, limited to safe characters and length; otherwise make one."""
    cleaned = REQUEST_ID_ALLOWED.sub("", supplied or "")[:REQUEST_ID_MAX_CHARS]
    return cleaned or new_request_id()


class _RequestIds:
    """Unique request ids without a system call each: a random per-process prefix and a counter.

    (uuid4 reads os.urandom for every id: about a tenth of a cache hit's time under load.)
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # a forked worker must not repeat its parent's ids

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter):016x}"


new_request_id = _RequestIds()


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)  # HTTP errors included: Flask looks handlers up along the class's MRO
    def _error(error: Exception) -> Response:
        body, status, headers = error_answer(error, state().settings, request.environ)
        return json_response(body, status, headers)


# --- routes --------------------------------------------------------------------------------


def _register_routes(app: Flask) -> None:
    for path in PREDICT_ROUTES:
        # POST is answered by _WsgiEntry before Flask's dispatch (predict_answer); the rule gives the
        # other methods Flask's 405 and OPTIONS answers, and the metrics their route label.
        app.add_url_rule(path, endpoint=f"predict:{path}", methods=["POST"])
    app.add_url_rule("/health", view_func=health, methods=["GET"])
    app.add_url_rule("/ready", view_func=ready, methods=["GET"])
    app.add_url_rule("/metrics", view_func=prometheus_metrics, methods=["GET"])
    app.add_url_rule("/openapi.json", view_func=openapi_json, methods=["GET"])
    app.add_url_rule("/docs", view_func=docs_page, methods=["GET"])
    app.add_url_rule("/docs/", view_func=docs_slash, methods=["GET"])
    app.add_url_rule("/docs/<path:asset>", view_func=docs_asset, methods=["GET"])


def predict_answer(current: ServiceState, environ: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """POST /predict: the answer's body and headers, or an ApiError / HTTPException (error_answer)."""
    texts = _parse_predict_request(current, environ)
    _check_serving(current)
    try:
        prediction = current.predictor.predict(texts, environ.get(THREAD_WAIT_KEY, 0.0))
    except Overloaded as error:
        raise unavailable(current.settings, f"overloaded: {error}") from None
    body = {
        "predictions": [[{"label": label, "score": score} for label, score in ranked] for ranked in prediction.scores],
        "model": current.predictor.model_string,
    }
    return body, {"X-Cache": prediction.cache_status}


def _check_serving(current: ServiceState) -> None:
    """503 + Retry-After while the model loads or the service drains (predict and /ready alike)."""
    if current.predictor is None:
        raise unavailable(current.settings, "the model is still loading")
    if current.draining:
        raise unavailable(current.settings, "the service is shutting down")


def _parse_predict_request(current: ServiceState, environ: dict[str, Any]) -> list[str]:
    settings = current.settings
    length = get_content_length(environ)
    if length is not None and length > settings.max_body_bytes:
        raise RequestEntityTooLarge()  # before anything else: do not read what will be refused
    if not _is_json(environ.get("CONTENT_TYPE", "")):
        raise ApiError(415, "Content-Type must be application/json")
    body = parse_json(_read_body(environ, length, settings.max_body_bytes))
    try:
        parsed = current.predict_request.model_validate(body)
    except ValidationError as error:
        issues = [{"loc": list(issue["loc"]), "msg": issue["msg"], "type": issue["type"]} for issue in error.errors()]
        raise ApiError(422, issues) from None
    return parsed.text


class NotJson(ValueError):
    """What a body is, that RFC 8259 JSON is not: the reason of a 400."""


def parse_json(raw: bytes) -> Any:
    """The body as RFC 8259 JSON, or a 400 that says precisely what is wrong with it.

    Stricter than `json.loads` where it would guess or fail in a way the client cannot act on:
    UTF-8 only (a leading byte-order mark is ignored, RFC 8259 section 8.1); no NaN or Infinity
    and no number a double or this interpreter cannot hold (section 6); no duplicate keys, which
    two parsers may read differently (section 4); nesting as deep as the interpreter's recursion
    limit allows. A lone surrogate escape (\\ud800) is JSON, but not text: a 422 names the text.
    """
    try:
        return json.loads(
            _utf8_text(raw), object_pairs_hook=_object_without_duplicate_keys, parse_constant=_refuse_constant,
            parse_int=_parse_int, parse_float=_parse_float,
        )
    except (json.JSONDecodeError, NotJson) as error:
        reason = str(error)
    except RecursionError:
        reason = "arrays and objects are nested too deeply"
    raise ApiError(400, f"body is not valid JSON: {reason}")


def _utf8_text(raw: bytes) -> str:
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise NotJson(f"it looks like {encoding.upper()} (zero bytes or its byte-order mark); send UTF-8")
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        offset = error.start + len(raw) - len(body)
        raise NotJson(f"it is not UTF-8: byte 0x{raw[offset]:02x} at offset {offset} ({error.reason})") from None


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) < len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise NotJson(f"duplicate key {json.dumps(duplicate[:50])}")
    return unique


def _refuse_constant(name: str) -> Any:
    raise NotJson(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:  # Python's guard against quadratic int parsing: PYTHONINTMAXSTRDIGITS
        raise NotJson(
            f"an integer of {len(digits.lstrip('-'))} digits is longer than this service reads "
            f"({sys.get_int_max_str_digits()} at most)"
        ) from None


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotJson(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is beyond the range of a double")
    return value


def _read_body(environ: dict[str, Any], length: int | None, limit: int) -> bytes:
    """The body, at most `limit` bytes (413 past it), whether or not Content-Length was sent."""
    if length is not None:
        return environ["wsgi.input"].read(length) if length else b""
    if "wsgi.input_terminated" not in environ:
        return b""  # no length and no framing (chunked) from the server: no body
    stream, chunks, size = environ["wsgi.input"], [], 0
    while chunk := stream.read(min(1 << 16, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


@functools.lru_cache(maxsize=256)
def _is_json(content_type: str) -> bool:
    """application/json or application/*+json, parameters (charset) aside; a few distinct values are seen."""
    mimetype = parse_options_header(content_type)[0].lower()
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def health() -> Response:
    return json_response({"status": "ok"})


def ready() -> Response:
    current = state()
    _check_serving(current)
    return json_response(
        {"status": "ready", "model": current.predictor.model_string, "cache": current.predictor.cache_state()}
    )


def prometheus_metrics() -> Response:
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


def openapi_json() -> Response:
    return json_response(state().openapi)


def docs_page() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html")


def docs_slash() -> Response:
    """The page's asset links are relative to /docs: from /docs/ they would miss, so redirect."""
    return redirect("../docs", code=308)


def docs_asset(asset: str) -> Response:
    if asset == "swagger-init.js":
        return Response(DOCS_INIT_SCRIPT, mimetype="text/javascript")
    from swagger_ui_bundle import swagger_ui_path

    return send_from_directory(str(swagger_ui_path), asset, max_age=86400)


# --- module-level app for `gunicorn app:app` ----------------------------------------------------

_app: Flask | None = None


def __getattr__(name: str) -> Any:
    """`app` is built on first access (gunicorn's import in the worker), not at import time."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
