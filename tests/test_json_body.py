"""Every way a body can fail to be JSON is a 400 that says which, never a 500 (app alone, no server).

RFC 8259 is the rule: UTF-8 only, a leading byte-order mark ignored (section 8.1); no NaN or
Infinity, no number beyond a double, no integer longer than the interpreter reads (section 6,
which lets a parser limit numbers); no duplicate keys (section 4); nesting up to the interpreter's
recursion limit (section 9). A lone surrogate escape is JSON but not text: 422 names the text.
"""

from __future__ import annotations

import pytest

import app as app_module
from model.settings import Settings
from tests.fakes import FixedPredictor


@pytest.fixture(scope="module")
def client():
    return app_module.create_app(FixedPredictor(), Settings()).test_client()


def post(client, body: bytes):
    return client.post("/predict", data=body, content_type="application/json")


@pytest.mark.parametrize("body, detail", [
    (b'{"text": ["ok"], "n": 1' + b"9" * 4300 + b"}",
     "an integer of 4301 digits is longer than this service reads (4300 at most)"),
    (b'{"text": ["ok"], "n": -' + b"9" * 5000 + b"}",
     "an integer of 5000 digits is longer than this service reads (4300 at most)"),
    (b'{"text": ["ok"], "n": 1e400}', "the number 1e400 is beyond the range of a double"),
    (b'{"text": ["ok"], "n": NaN}', "NaN is not a JSON value (JSON has no NaN or Infinity)"),
    (b'{"text": ["ok"], "n": -Infinity}', "-Infinity is not a JSON value (JSON has no NaN or Infinity)"),
    (b'{"text": ["a"], "text": ["b"]}', 'duplicate key "text"'),
    (b'{"text": ["a"], "x": {"k": 1, "k": 2}}', 'duplicate key "k"'),
    (b'{"a": 1, "text": ["a"], "b": 2, "text": ["b"]}', 'duplicate key "text"'),
    (b'{"' + b"k" * 60 + b'": 1, "' + b"k" * 60 + b'": 2}', 'duplicate key "' + "k" * 50 + '"'),
    (b'{"text": ["ok"], "n": 1.00000000000000e400}', "the number 1.00000000000000e400 is beyond the range of a double"),
    (b'{"text": ["ok"], "n": 1.000000000000000e400}', "the number 1.000000000000000e40... is beyond the range of a double"),
    (b'{"text": ' + b"[" * 100000 + b"]" * 100000 + b"}", "arrays and objects are nested too deeply"),
    ('{"text": ["ok"]}'.encode("utf-16"), "it looks like UTF-16 (zero bytes or its byte-order mark); send UTF-8"),
    ('{"text": ["ok"]}'.encode("utf-16-be"), "it looks like UTF-16-BE (zero bytes or its byte-order mark); send UTF-8"),
    ('{"text": ["ok"]}'.encode("utf-32"), "it looks like UTF-32 (zero bytes or its byte-order mark); send UTF-8"),
    (b'{"text": ["caf\xe9"]}', "it is not UTF-8: byte 0xe9 at offset 14 (invalid continuation byte)"),
    (b'\xef\xbb\xbf{"text": ["\xff"]}', "it is not UTF-8: byte 0xff at offset 14 (invalid start byte)"),
    (b'{"text": ["\xed\xa0\x80"]}', "it is not UTF-8: byte 0xed at offset 11 (invalid continuation byte)"),
    (b'{"text": [', "Expecting value: line 1 column 11 (char 10)"),
    (b"", "Expecting value: line 1 column 1 (char 0)"),
])
def test_a_body_that_is_not_json_is_a_400_saying_why(client, body, detail):
    response = post(client, body)
    assert (response.status_code, response.get_json()) == (400, {"detail": f"body is not valid JSON: {detail}"})


def test_a_utf8_byte_order_mark_is_ignored(client):
    response = post(client, b'\xef\xbb\xbf{"text": ["with a BOM"]}')
    assert response.status_code == 200 and len(response.get_json()["predictions"]) == 1


@pytest.mark.parametrize("body, loc", [(b'{"text": ["ok", "half of a pair \\ud83d"]}', ["text", 1]),
                                       (b'{"text": "\\udc00"}', ["text", 0])])
def test_a_lone_surrogate_in_a_text_is_a_422_naming_the_text(client, body, loc):
    response = post(client, body)
    assert response.status_code == 422
    assert [(issue["loc"], issue["type"]) for issue in response.get_json()["detail"]] == [(loc, "string_unicode")]


def test_numbers_within_range_are_json_and_meet_the_schema(client):
    response = post(client, b'{"text": ["ok"], "n": ' + b"9" * 4300 + b", \"x\": 1.5e308}")
    assert response.status_code == 422
    assert sorted(issue["loc"][0] for issue in response.get_json()["detail"]) == ["n", "x"]
