"""One family of errors, one JSON shape, one place that turns them into responses.

Every error body is ``{"error": {"code": ..., "message": ..., "details": [...]}}``.
"""

from __future__ import annotations

import difflib
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

log = logging.getLogger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None, status_code: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers
        if status_code is not None:
            self.status_code = status_code


class Unauthorized(AppError):
    status_code, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status_code, code = 403, "forbidden"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class InvalidInput(AppError):
    status_code, code = 422, "invalid_input"


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


class Unavailable(AppError):
    status_code, code = 503, "unavailable"


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="Stable, for programs: not_found, conflict, invalid_input, unauthorized, ...")
    message: str = Field(description="For people: what went wrong and what to change.")
    details: list[ErrorDetail]


class ErrorBody(BaseModel):
    """Every error trainserve answers outside /v2."""

    error: ErrorInfo


class V2Error(BaseModel):
    """Errors under /v2, as the Open Inference Protocol defines them."""

    error: str


WHY = {
    400: "The request cannot be used (under /v2: any invalid request; elsewhere: a URL import that failed).",
    401: "No API key, or one that is unknown, revoked or expired.",
    403: "The API key lacks the scope this route needs.",
    404: "What the request names does not exist.",
    409: "The request conflicts with the current state (the message says which, and what to do).",
    413: "The body, a file or an image is larger than the server takes.",
    415: "A Content-Encoding the server does not read (gzip, deflate or none).",
    422: "The request breaks a rule of the schema or of the route; `details` names the fields.",
    429: "A rate limit or the queued-jobs cap; wait `Retry-After` seconds.",
    503: "The database (or, for /readyz, a dependency) does not answer; retry after `Retry-After` seconds.",
}


def errors(*codes: int, v2: bool = False) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the error statuses it can answer, each with the error shape."""
    return {code: {"model": V2Error if v2 else ErrorBody, "description": WHY[code]} for code in codes}


def parse_id(value: str, kind: str) -> uuid.UUID:
    """Ids in paths are UUIDs; anything else names no such resource."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no {kind} with id {value!r}; ids look like 3f2b6c1e-...")


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


OPEN_INFERENCE_PREFIX = "/v2"
DATABASE_RETRY_AFTER = 5  # seconds


def error_response(request: Request, status: int, code: str, message: str,
                   details: list[dict[str, Any]] | None = None, headers: dict | None = None) -> JSONResponse:
    """trainserve's error shape, except under /v2, where the Open Inference Protocol fixes it as
    ``{"error": "<message>"}`` and a request the server cannot use is a 400."""
    if request.url.path.startswith(OPEN_INFERENCE_PREFIX + "/") or request.url.path == OPEN_INFERENCE_PREFIX:
        return JSONResponse({"error": message}, status_code=400 if status == 422 else status, headers=headers)
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def did_you_mean(name: str, choices, n: int = 3) -> str:
    """ "did you mean a or b? " for the choices closest to a mistyped name; "" when none is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=n)
    return f"did you mean {' or '.join(close)}? " if close else ""


def _message(error: dict[str, Any]) -> str:
    """Pydantic's message, with a "did you mean" where a choice's name was mistyped (``"type": "mpl"``)."""
    context = error.get("ctx") or {}
    if error.get("type") == "union_tag_invalid":
        tag, expected = str(context.get("tag")), str(context.get("expected_tags", ""))
        choices = [t.strip().strip("'") for t in expected.split(",") if t.strip()]
        hint = did_you_mean(tag, choices, n=2)
        field = str(context.get("discriminator", "type")).strip("'")
        return f"unknown {field} {tag!r}; {hint}one of: {', '.join(choices)}"
    return error.get("msg", "").removeprefix("Value error, ")


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"field": _location(tuple(e.get("loc", ()))), "message": _message(e)} for e in errors]


def allowed_methods(request: Request) -> str:
    """The methods the API documents for this path, across every route at it (Starlette's own 405 names only
    the first route's). Worked out from the OpenAPI document once per app."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = request.app.state.allowed_methods = [
            (compile_path(path)[0], path.count("{"), {method.upper() for method in item})
            for path, item in request.app.openapi()["paths"].items()]
    matches = [(params, methods) for pattern, params, methods in table if pattern.match(request.url.path)]
    # The most literal template names the resource: /v1/datasets/import, not /v1/datasets/{ref}.
    fewest = min((params for params, _ in matches), default=0)
    return ", ".join(sorted(set().union(*(methods for params, methods in matches if params == fewest))))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details) or "invalid request"
        return error_response(request, 422, "invalid_input", message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            return error_response(request, 422, "invalid_input", "the request body is not valid JSON (or not the "
                                  "form this route takes); the schema at /docs shows what to send")
        if exc.status_code == 405:  # every method of every route at this path, not only the first route's
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
            message = f"{request.method} is not allowed here; this path takes {headers['Allow']}"
            return error_response(request, 405, "method_not_allowed", message, headers=headers)
        code = {404: "not_found", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        return error_response(request, 422, "invalid_input", "a value in the request cannot be stored or looked up "
                              "(a NUL character, or a number out of range); remove it")

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # The connection pool checks connections before use, so the next request after the database is back
        # works: no restart needed.
        log.warning("database unavailable: %s", str(exc).splitlines()[0])
        return error_response(request, 503, "unavailable", "the database does not answer; try again in a few "
                              "seconds", headers={"Retry-After": str(DATABASE_RETRY_AFTER)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(request, 500, "internal_error", "internal error; the server log has the details")
