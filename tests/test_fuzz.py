"""No input yields a 500: hypothesis throws hostile bodies at /predict of a real Gunicorn service.

Arbitrary bytes, JSON with deep nesting, huge numbers, NaN and Infinity, lone surrogates,
duplicate keys, odd encodings (UTF-16/32, BOMs, encoded surrogates), odd content types and
chunked bodies. Every answer must be 200 or 4xx with a JSON body, a 200 must answer every text,
and the service must still serve afterwards. Bounded by `max_examples`; the number of inputs
and the statuses they got are printed.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 1500
MAX_BATCH_TEXTS = 8
MAX_TEXT_CHARS = 300
MAX_BODY_BYTES = 256 * 1024
TIMEOUT = 30
ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "latin-1")
CONTENT_TYPES = (
    "application/json", "application/json; charset=utf-8", "application/json; charset=utf-16",
    "application/json;charset=UTF-32", "application/problem+json", "application/json; charset=\"x\"; q=;",
    "APPLICATION/JSON", "text/plain", "application/x-www-form-urlencoded", "a/b/c;;;", "", None,
)

@pytest.fixture(scope="module")
def fuzz_service(service, tiny_artifact):
    handle = service({
        "MODEL_DIR": tiny_artifact, "PRECISION": "fp32", "MAX_BATCH_TEXTS": str(MAX_BATCH_TEXTS),
        "MAX_TEXT_CHARS": str(MAX_TEXT_CHARS), "MAX_BODY_BYTES": str(MAX_BODY_BYTES), "GUNICORN_THREADS": "4",
    })
    yield handle
    handle.stop()


# --- JSON documents as trees, written by hand so that they can be wrong in every way -------------

# Any code point, lone surrogates included: JSON can carry them as \ud800 escapes.
any_text = st.text(st.characters(), max_size=40)
huge_integer = st.builds(lambda sign, digit, count: sign + digit + "0" * count,
                         st.sampled_from(["", "-"]), st.sampled_from("123456789"), st.integers(4200, 12000))
odd_number = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "0.0e0",
                              "1E+2", "01", "1.", ".5", "+1", "0x10", "1_000"])
scalar = st.one_of(
    st.none().map(lambda _: "null"), st.booleans().map(lambda b: "true" if b else "false"),
    st.integers().map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), huge_integer, odd_number,
    any_text.map(lambda s: ("string", s)),
)


def _document(children):
    pairs = st.lists(st.tuples(st.one_of(st.just("text"), any_text), children), max_size=4)
    return st.one_of(st.lists(children, max_size=4).map(lambda items: ("array", items)),
                     pairs.map(lambda items: ("object", items)))


json_tree = st.recursive(scalar, _document, max_leaves=12)


def write(tree, ascii_only: bool) -> str:
    """The JSON text of a tree; objects may repeat keys, strings may hold lone surrogates."""
    if isinstance(tree, str):
        return tree
    kind, value = tree
    if kind == "string":
        return json.dumps(value, ensure_ascii=ascii_only)
    if kind == "array":
        return "[" + ",".join(write(item, ascii_only) for item in value) + "]"
    return "{" + ",".join(f"{json.dumps(key, ensure_ascii=ascii_only)}:{write(item, ascii_only)}"
                          for key, item in value) + "}"


@st.composite
def json_bodies(draw):
    """A request-shaped or arbitrary document, in any encoding, sometimes cut or corrupted."""
    if draw(st.booleans()):
        texts = draw(st.lists(st.one_of(any_text.map(lambda s: ("string", s)), json_tree), max_size=10))
        extra = draw(st.lists(st.tuples(st.one_of(st.just("text"), any_text), json_tree), max_size=2))
        tree = ("object", [("text", ("array", texts)), *extra])
    else:
        tree = draw(json_tree)
    text = write(tree, ascii_only=draw(st.booleans()))
    encoding = draw(st.sampled_from(ENCODINGS))
    encoded = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") and draw(st.booleans()) else "replace")
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(0, len(encoded)))
        encoded = encoded[:cut] + draw(st.binary(max_size=4)) + encoded[cut + draw(st.integers(0, 2)):]
    return encoded


@st.composite
def deep_bodies(draw):
    depth = draw(st.integers(1, 60000))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"text":[', "]}")]))
    closed = draw(st.booleans())
    return ('{"text": ' + opener * depth + '"x"' + (closer * depth if closed else "") + "}").encode()


@st.composite
def valid_requests(draw):
    """Bodies the contract accepts or rejects with 422, with any characters in the texts."""
    texts = draw(st.lists(st.text(st.characters(), min_size=1, max_size=MAX_TEXT_CHARS + 5),
                          min_size=1, max_size=MAX_BATCH_TEXTS + 1))
    body = {"text": texts[0] if len(texts) == 1 and draw(st.booleans()) else texts}
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


# Any byte a header value may hold (RFC 9110 field-value); control characters are not HTTP and
# Gunicorn refuses them itself, before the service sees the request.
header_values = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c == 0x09 or 0x20 <= c != 0x7F))
bodies = st.one_of(st.binary(max_size=2048), json_bodies(), deep_bodies(), valid_requests())


def send(service, body: bytes, content_type: str | None, chunked: bool, request_id: bytes) -> tuple[int, dict, bytes]:
    """POST /predict exactly as given: raw bytes on a socket, no client-side normalisation."""
    head = [b"POST /predict HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", b"X-Request-ID: " + request_id]
    if content_type is not None:
        head.append(b"Content-Type: " + content_type.encode())
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000]) for i in range(0, len(body), 1000))
        payload += b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    with socket.create_connection(("127.0.0.1", int(service.env["PORT"])), timeout=TIMEOUT) as connection:
        try:
            connection.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413, 415) before the whole body was read: the answer is still there to read
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def texts_sent(body: bytes) -> int | None:
    """How many texts a 200 must answer, when the body is a plain valid request."""
    try:
        text = json.loads(body.decode("utf-8"))["text"]
    except Exception:
        return None
    return 1 if isinstance(text, str) else len(text)


def test_no_input_gets_a_5xx_and_the_service_still_serves(fuzz_service, capsys):
    statuses: Counter[int] = Counter()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(body=bodies, content_type=st.just("application/json") | st.sampled_from(CONTENT_TYPES),
           chunked=st.booleans(), request_id=header_values)
    @example(body=b'{"text": ["ok"], "n": 1' + b"9" * 4300 + b"}", content_type="application/json", chunked=False,
             request_id=b"huge-int")
    @example(body=b'{"text": ' + b"[" * 100000 + b"}", content_type="application/json", chunked=False,
             request_id=b"deep")
    @example(body=b'{"text": ["ok"], "\\udc00": 1}', content_type="application/json", chunked=False,
             request_id=b"surrogate-key")
    @example(body='{"text": ["ok"]}'.encode("utf-16"), content_type="application/json", chunked=False,
             request_id=b"utf-16")
    @example(body=b'{"text": ["a"], "text": NaN}', content_type="application/json", chunked=True, request_id=b"nan")
    def answer_is_json_and_not_5xx(body, content_type, chunked, request_id):
        status, headers, payload = send(fuzz_service, body, content_type, chunked, request_id)
        statuses[status] += 1
        assert status == 200 or 400 <= status < 500, (status, payload[:300])
        assert headers.get("Content-Type") == "application/json", (status, headers, payload[:300])
        answer = json.loads(payload)
        if status == 200:
            expected = texts_sent(body)
            assert expected is None or len(answer["predictions"]) == expected
        else:
            assert answer["detail"]

    try:
        answer_is_json_and_not_5xx()
    finally:
        with capsys.disabled():
            counts = ", ".join(f"{status} x{count}" for status, count in sorted(statuses.items()))
            print(f"\nfuzz: {sum(statuses.values())} generated inputs sent to /predict: {counts}")
    assert fuzz_service.process.poll() is None, "the service died"
    assert requests.get(fuzz_service.url("/ready"), timeout=TIMEOUT).status_code == 200
    response = requests.post(fuzz_service.url("/predict"), json={"text": ["still serving"]}, timeout=TIMEOUT)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1
    log = fuzz_service.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert log.count("sentiment: imports") == 1, "the worker was restarted"
