"""Every request body has a ceiling, counted as it arrives.

The ceiling is TRAINSERVE_MAX_REQUEST_BYTES for every route; a dataset upload sets its own request's to
TRAINSERVE_MAX_UPLOAD_BYTES (:func:`raise_ceiling`) before it reads the form. A Content-Length over the
ceiling is refused before any of the body is read; a body without one, as soon as it passes. A body whose
Content-Length is within the app's ceiling is not counted at all: the server delivers exactly that many
bytes, and so /predict's hot path pays for one scan of the headers.

Starlette has a limiter of its own (``FastAPI(max_body_size=...)``), but when a Content-Length is over its
limit it answers a plain-text "Content Too Large" in place of the app's response, naming neither the limit
nor the setting, and a route's limit is fixed when the route is declared, before the settings are read. This
one raises an ``HTTPException`` from ``receive``, which FastAPI passes through its body parsing to the app's
error handler, so the answer is the API's own 413.
"""

from __future__ import annotations

from typing import NamedTuple

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CEILING = "trainserve.body_ceiling"  # the scope key: this request's Ceiling


class Ceiling(NamedTuple):
    limit: int  # what the setting says
    slack: int  # framing on top of it (a multipart form's boundaries and fields)
    setting: str
    what: str

    def error(self) -> HTTPException:
        return HTTPException(413, f"{self.what} is larger than the {self.limit:,}-byte limit ({self.setting})")


class BodyCeiling:
    """ASGI middleware: refuses a request body past the ceiling in the request's scope (413)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.ceiling = Ceiling(limit, 0, "TRAINSERVE_MAX_REQUEST_BYTES", "the request body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope[CEILING] = self.ceiling
        declared, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked and declared.isdigit() and int(declared) <= self.ceiling.limit:
            # The server delivers exactly the declared bytes, so there is nothing to count: the hot path
            # (/predict's small JSON bodies) pays for this header scan only.
            return await self.app(scope, receive, send)
        await self.app(scope, _counted(scope, receive), send)


def _counted(scope: Scope, receive: Receive) -> Receive:
    """``receive``, refusing past the ceiling in the scope when the body is read (a route may raise it first):
    a declared length at once, an undeclared one as it arrives."""
    received = -1  # -1: nothing read yet, so the declared length is checked first

    async def counted() -> Message:
        nonlocal received
        ceiling = scope[CEILING]
        if received < 0:
            received = 0
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > ceiling.limit + ceiling.slack:
                    raise ceiling.error()
        message = await receive()
        received += len(message.get("body", b""))
        if received > ceiling.limit + ceiling.slack:
            raise ceiling.error()
        return message

    return counted


def raise_ceiling(request: Request, ceiling: Ceiling) -> None:
    """This request's body may be as large as ``ceiling`` says: for a route whose own setting differs from the
    app's ceiling. Called before the body is read; a declared length past it is refused here and now."""
    request.scope[CEILING] = ceiling
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ceiling.limit + ceiling.slack:
        raise ceiling.error()
