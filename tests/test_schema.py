"""/openapi.json is a valid OpenAPI 3.1 document of every route, /docs works offline, and a
schema-driven fuzzer (schemathesis) finds no 5xx and no answer that breaks the document."""

from __future__ import annotations

import json
import re
import subprocess
from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import jsonschema
import pytest
import requests
import schemathesis

import app as app_module
from model.settings import Settings
from tests.conftest import VENV_BIN

pytestmark = pytest.mark.slow

PREDICT_STATUSES = {"200", "400", "413", "415", "422", "500", "503"}


@pytest.fixture(scope="module")
def document(api_service) -> dict:
    response = requests.get(api_service.url("/openapi.json"), timeout=10)
    assert response.status_code == 200
    return response.json()


def test_the_document_is_valid_openapi_3_1(api_service, document):
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_url(api_service.url("/openapi.json")).validate()  # the official 3.1 meta-schema
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_route_and_method_is_documented():
    flask_app = app_module.create_app(settings=Settings())
    served = {}
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        served.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(item) for path, item in flask_app.extensions["sentiment"].openapi["paths"].items()}
    assert served == documented


def test_predict_documents_every_status_header_and_the_limits(document):
    for path in ("/predict", "/project-predict"):
        operation = document["paths"][path]["post"]
        assert set(operation["responses"]) == PREDICT_STATUSES
        assert set(operation["responses"]["200"]["headers"]) == {"X-Cache", "X-Request-ID", "X-Revision"}
        assert "Retry-After" in operation["responses"]["503"]["headers"]
    request = document["components"]["schemas"]["PredictRequest"]
    assert request["additionalProperties"] is False
    single, listed = request["properties"]["text"]["anyOf"]
    assert (listed["minItems"], listed["maxItems"]) == (1, 32)  # MAX_BATCH_TEXTS of api_service
    assert (single["minLength"], single["maxLength"]) == (1, 2000)  # MAX_TEXT_CHARS of api_service
    assert listed["items"] == single
    for name in ("PredictResponse", "LabelScore", "ErrorResponse", "ServerErrorResponse",
                 "ValidationErrorResponse", "ValidationIssue", "HealthResponse", "ReadyResponse"):
        assert name in document["components"]["schemas"]


def test_answers_match_their_documented_schemas(api_service, document):
    # The components use OpenAPI references; as plain JSON Schema they become local $defs.
    defs = json.loads(json.dumps(document["components"]["schemas"]).replace("#/components/schemas/", "#/$defs/"))

    def check(response: requests.Response, name: str) -> None:
        jsonschema.validate(response.json(), {"$defs": defs, "$ref": f"#/$defs/{name}"})

    predict = api_service.url("/predict")
    check(requests.post(predict, json={"text": ["fine"]}, timeout=10), "PredictResponse")
    check(requests.post(predict, json={"text": [""]}, timeout=10), "ValidationErrorResponse")
    check(requests.post(predict, data=b"{", headers={"Content-Type": "application/json"}, timeout=10), "ErrorResponse")
    check(requests.get(api_service.url("/ready"), timeout=10), "ReadyResponse")
    check(requests.get(api_service.url("/health"), timeout=10), "HealthResponse")


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


def test_docs_page_loads_every_asset_from_the_service_itself(api_service):
    page = requests.get(api_service.url("/docs"), timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    parser = _AssetLinks()
    parser.feed(page.text)
    assert len(parser.links) >= 4
    own = urlparse(api_service.base_url).netloc
    for link in parser.links:
        url = urljoin(page.url, link)
        assert urlparse(url).netloc == own, f"{link} is not served by the service"
        asset = requests.get(url, timeout=10)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100
    scripts = [requests.get(urljoin(page.url, link), timeout=10).text for link in parser.links if link.endswith(".js")]
    initializer = next(script for script in scripts if "SwaggerUIBundle(" in script and "openapi.json" in script)
    assert not re.search(r"https?://", initializer)  # nothing fetched from elsewhere (no validator badge)
    assert requests.get(api_service.url("/docs/no-such-file.js"), timeout=10).status_code == 404


def test_docs_with_a_trailing_slash_redirects_to_the_page(api_service):
    answer = requests.get(api_service.url("/docs/"), allow_redirects=False, timeout=10)
    assert answer.status_code == 308
    assert urljoin(answer.url, answer.headers["Location"]) == api_service.url("/docs")
    followed = requests.get(api_service.url("/docs/"), timeout=10)
    assert followed.status_code == 200 and followed.url == api_service.url("/docs")
    assert "swagger-ui" in followed.text


def test_the_bundled_swagger_ui_renders_openapi_3_1():
    """Swagger UI reads OpenAPI 3.1 from version 5 on (the swagger-ui-bundle-v2 package)."""
    from swagger_ui_bundle import swagger_ui_path

    version = re.fullmatch(r"swagger-ui-(\d+)\.(\d+)\.(\d+)", swagger_ui_path.name)
    assert version and int(version.group(1)) >= 5, f"{swagger_ui_path.name} cannot render OpenAPI 3.1"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api_service, tmp_path):
    result = subprocess.run(
        [str(VENV_BIN / "schemathesis"), "run", api_service.url("/openapi.json"),
         "--checks", "all", "--max-examples", "50", "--max-time", "40", "--workers", "2",
         "--request-timeout", "10", "--seed", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", result.stdout), result.stdout[-3000:]
