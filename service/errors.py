"""One family of errors, one JSON shape, one place that turns them into responses.

Every error body is ``{"error": {"code": ..., "message": ..., "details": [...]}}``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"field": _location(tuple(e.get("loc", ()))), "message": e.get("msg", "").removeprefix("Value error, ")}
            for e in errors]


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
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), headers=exc.headers)

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
