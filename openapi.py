"""The OpenAPI 3.1 document of the service and the Swagger UI page over it (GET /openapi.json, /docs).

Built once per app from app.py's Pydantic payload models, so the schemas are the ones requests
are validated against; every route and status of the API is listed with its headers. The page
is served from the swagger-ui-bundle package's files: no CDN, it works offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

# --- the page ------------------------------------------------------------------------------

DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Sentiment service API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script src="docs/swagger-ui-standalone-preset.js"></script>
  <script src="docs/swagger-init.js"></script>
</body>
</html>
"""

# Served as a file rather than inline so a strict Content-Security-Policy can forbid inline scripts.
DOCS_INIT_SCRIPT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""



# --- the document --------------------------------------------------------------------------


def openapi_document(predict_request: type[BaseModel], answers: Sequence[type[BaseModel]]) -> dict[str, Any]:
    """OpenAPI 3.1 for every route and status, with the schemas generated from the payload models.

    `answers` are the response models; the paths below name them: PredictResponse,
    ErrorResponse, ServerErrorResponse, ValidationErrorResponse, HealthResponse, ReadyResponse.
    """
    _, top = models_json_schema(
        [(predict_request, "validation")] + [(model, "serialization") for model in answers],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sentiment service",
            "version": "1",
            "description": "Sentiment scores for texts, with a Redis per-text cache and dynamic batching.",
        },
        "paths": _openapi_paths(),
        "components": {"schemas": top["$defs"]},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _header(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string", **schema}}


REQUEST_ID_HEADER = _header("The caller's X-Request-ID (safe characters, at most 128), or a generated one.")
RETRY_AFTER_HEADER = _header("Seconds to wait before retrying.", pattern="^[0-9]+$")


def _error(description: str, schema: str = "ErrorResponse", **headers: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Request-ID": REQUEST_ID_HEADER, **headers},
            "content": _json_content(schema)}


def _server_error() -> dict[str, Any]:
    return _error("A bug; the body names the request id and nothing internal.", "ServerErrorResponse")


def _not_ready() -> dict[str, Any]:
    return _error("Model not loaded yet, shutting down, or overloaded.", **{"Retry-After": RETRY_AFTER_HEADER})


def _predict_operation(operation_id: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [{
                "name": "X-Request-ID", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "Correlation id, echoed in the answer (generated when absent).",
            }],
            "requestBody": {"required": True, "content": _json_content("PredictRequest")},
            "responses": {
                "200": {
                    "description": "Scores for every text, in input order.",
                    "headers": {
                        "X-Cache": _header("hit, miss, partial or bypass", enum=["hit", "miss", "partial", "bypass"]),
                        "X-Request-ID": REQUEST_ID_HEADER,
                        "X-Revision": _header("The Knative revision (K_REVISION) when set, else the model string."),
                    },
                    "content": _json_content("PredictResponse"),
                },
                "400": _error("The body is not valid JSON."),
                "413": _error("The body is larger than MAX_BODY_BYTES."),
                "415": _error("The Content-Type is not JSON."),
                "422": _error("The JSON breaks the request rules; one entry per problem.", "ValidationErrorResponse"),
                "500": _server_error(),
                "503": _not_ready(),
            },
        }
    }


def _get_operation(operation_id: str, summary: str, ok: dict[str, Any], **more: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation_id, "summary": summary,
                    "responses": {"200": ok, **more, "500": _server_error()}}}


def _openapi_paths() -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    return {
        "/predict": _predict_operation("predict", "Sentiment scores for one or more texts"),
        "/project-predict": _predict_operation("projectPredict", "Alias of /predict (the original project's path)"),
        "/health": _get_operation("health", "Liveness: the process serves HTTP",
                                  {"description": "Alive.", "content": _json_content("HealthResponse")}),
        "/ready": _get_operation("ready", "Readiness: model loaded and warmed up, not draining",
                                 {"description": "Ready.", "content": _json_content("ReadyResponse")},
                                 **{"503": _not_ready()}),
        "/metrics": _get_operation("metrics", "Prometheus text exposition",
                                   {"description": "Metrics.", "content": text}),
        "/openapi.json": _get_operation("openapi", "This document",
                                        {"description": "OpenAPI 3.1.", "content": {
                                            "application/json": {"schema": {"type": "object"}}}}),
        "/docs": _get_operation("docs", "Swagger UI over this document", {
            "description": "HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}),
        "/docs/": {"get": {"operationId": "docsSlash", "summary": "Redirect to /docs", "responses": {
            "308": {"description": "To /docs.", "headers": {"Location": {"schema": {"type": "string"}}}},
            "500": _server_error()}}},
        "/docs/{asset}": {
            "get": {
                "operationId": "docsAsset",
                "summary": "A file of the Swagger UI page",
                "parameters": [{"name": "asset", "in": "path", "required": True, "schema": {"type": "string"},
                                "example": "swagger-ui.css"}],
                "responses": {
                    "200": {"description": "The file."},
                    "404": _error("No such file."),
                    "500": _server_error(),
                },
            }
        },
    }
