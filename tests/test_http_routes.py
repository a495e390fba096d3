"""The routes besides predict, and how every JSON answer is written, on the app alone (no server):
/health, /openapi.json (the request schema with this deployment's limits), /docs and its assets,
the module-level `app` Gunicorn imports.

Fast, so that mutation testing of app.py runs them for every mutant.
"""

from __future__ import annotations

import math

import pytest
from flask import Flask

import app as app_module
from model.settings import Settings
from tests.fakes import FixedPredictor

TEXT_ITEM = {  # one text of a deployment with MAX_TEXT_CHARS=50, as JSON Schema
    "maxLength": 50,
    "minLength": 1,
    "pattern": "[^\\t\\n\\u000b\\u000c\\r\\u001c-\\u001f \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
    "type": "string",
}


@pytest.fixture
def client():
    return app_module.create_app(None, Settings(max_batch_texts=4, max_text_chars=50)).test_client()


def test_health_is_ok_while_the_model_loads(client):
    response = client.get("/health")
    assert (response.status_code, response.mimetype, response.get_data()) == (200, "application/json", b'{"status":"ok"}')


def test_the_request_schema_takes_a_list_or_one_string_within_the_deployments_limits(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json()["components"]["schemas"]["PredictRequest"] == {
        "additionalProperties": False,
        "properties": {
            "text": {
                "anyOf": [TEXT_ITEM, {"items": TEXT_ITEM, "maxItems": 4, "minItems": 1, "type": "array"}],
                "description": "1..4 texts of 1..50 characters, not only whitespace; or a single string. "
                               "Texts longer than the model's window are truncated.",
                "title": "Text",
            }
        },
        "required": ["text"],
        "title": "PredictRequest",
        "type": "object",
    }


def test_the_docs_page_is_html_and_loads_its_script_from_the_service(client):
    response = client.get("/docs")
    assert (response.status_code, response.mimetype) == (200, "text/html")
    assert '<script src="docs/swagger-init.js"></script>' in response.get_data(as_text=True)
    script = client.get("/docs/swagger-init.js")
    assert (script.status_code, script.mimetype) == (200, "text/javascript")
    assert 'url: "openapi.json"' in script.get_data(as_text=True)


def test_docs_with_a_trailing_slash_is_a_permanent_redirect_to_the_page(client):
    response = client.get("/docs/")
    assert (response.status_code, response.headers["Location"]) == (308, "../docs")


def test_swagger_ui_files_are_served_from_the_bundle_and_cached_for_a_day(client):
    response = client.get("/docs/swagger-ui.css")
    assert (response.status_code, response.mimetype) == (200, "text/css")
    assert response.get_data().startswith(b".swagger-ui")
    assert "max-age=86400" in response.headers["Cache-Control"]
    assert client.get("/docs/no-such-file.js").status_code == 404


# --- JSON answers --------------------------------------------------------------------------------


def test_answers_are_compact_utf8_json():
    client = app_module.create_app(FixedPredictor(row=[("très positif", 0.5), ("négatif", 0.5)]), Settings()).test_client()
    response = client.post("/predict", json={"text": "x"})
    assert response.status_code == 200
    assert response.get_data() == (
        '{"predictions":[[{"label":"très positif","score":0.5},{"label":"négatif","score":0.5}]],'
        '"model":"fixed@000000000000"}'
    ).encode("utf-8")


def test_a_score_that_is_not_a_number_never_reaches_the_client():
    client = app_module.create_app(FixedPredictor(row=[("POSITIVE", math.nan), ("NEGATIVE", math.nan)]), Settings()).test_client()
    response = client.post("/predict", json={"text": "x"})
    assert response.status_code == 500
    assert b"NaN" not in response.get_data()


# --- the module-level app ------------------------------------------------------------------------


def test_the_module_app_is_built_once_on_first_access(monkeypatch):
    monkeypatch.setattr(app_module, "_app", None)
    first = app_module.app
    assert isinstance(first, Flask)
    assert app_module.app is first
    assert first.test_client().get("/health").status_code == 200


def test_other_module_attributes_do_not_exist():
    with pytest.raises(AttributeError, match="^module 'app' has no attribute 'application'$"):
        app_module.application
