"""The OpenAPI document says every status a route can answer, in the shape the server sends.

Routes declare what is theirs (404, 409, 413, 429...) with ``responses=errors(...)``. What follows from how
the app is built is added here, once, for every operation: 401 and 403 where a key is needed (on a server
that requires keys; one that does not declares no key at all), 503 where the database is, and the 422 (400
under /v2) of request validation in trainserve's error shape instead of FastAPI's default one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.http.errors import WHY, ErrorBody, V2Error

NO_DATABASE = {("get", "/healthz"), ("get", "/v2"), ("get", "/v2/health/live")}


def _response(code: int, schema: str) -> dict[str, Any]:
    return {"description": WHY[code], "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorBody, V2Error):
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    for path, item in schema["paths"].items():
        v2 = path == "/v2" or path.startswith("/v2/")
        shape = "V2Error" if v2 else "ErrorBody"
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                del responses["422"]
                responses["400" if v2 else "422"] = _response(400 if v2 else 422, shape)
            codes = ([401, 403] if operation.get("security") else []) + \
                ([] if (method, path) in NO_DATABASE else [503])
            for code in codes:
                responses.setdefault(str(code), _response(code, shape))
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def without_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """The document of a server that needs no key (it listens on loopback only): no operation asks for one,
    so that a client generator or a fuzzer reads what this server does, not what a deployed one does."""
    for item in schema["paths"].values():
        for operation in item.values():
            operation.pop("security", None)
    schema.get("components", {}).pop("securitySchemes", None)
    schema["info"]["description"] = ("This server requires no API key: it listens on loopback only. Anywhere "
                                     "else every route asks for one (docs/security.md).")
    return schema


def install(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app.state, "openapi_documented", False):
            schema = generate()
            if not app.state.settings.keys_required:
                without_keys(schema)
            document_errors(schema)
            app.state.openapi_documented = True
        return app.openapi_schema

    app.openapi = openapi
