"""The API's telemetry on each request: the app class that decides which requests are traced, and the
middleware (pure ASGI) for the request id and the Prometheus count and timing.

- ``X-Request-ID``: the caller's (up to 128 printable characters) or a new one; set for the log lines of the
  request (service/observability/logs.py) and returned on the answer.
- Metrics: counted by route template and status (service/observability/metrics.py); a path that matched no route counts
  as ``unmatched``, so no label takes unbounded values.

- Traces: FastAPI's own (service/observability/tracing.py), for the requests :func:`service.observability.tracing.decide` picks.

Everything here is on /predict's path, whose budget is 5 % of its throughput (docs/benchmarks.md).
"""

from __future__ import annotations

import time
from random import getrandbits

from fastapi import FastAPI

from service.observability import logs, tracing
from service.observability.metrics import Metrics

REQUEST_ID = b"x-request-id"
MAX_REQUEST_ID = 128


def _request_id(headers) -> bytes:
    for name, value in headers:
        if name == REQUEST_ID:
            if 0 < len(value) <= MAX_REQUEST_ID and value.isascii() and value.decode().isprintable():
                return value
            break
    return b"%032x" % getrandbits(128)  # an id, not a secret: the fastest 128 random bits


class TracedFastAPI(FastAPI):
    """FastAPI, whose telemetry traces only the requests :func:`service.observability.tracing.decide` picks.

    An untraced request is marked with FastAPI's own ``fastapi.telemetry`` scope entry, the mark it sets
    itself on a request its ``exclude`` option leaves out: its telemetry then steps aside at once. (The
    ``exclude`` option itself still enters an OpenTelemetry context for every request it leaves out, 3 µs
    that /predict's budget has no room for.)"""

    trace_share: float | None = None  # the share of inference requests traced; None: tracing is off

    async def __call__(self, scope, receive, send) -> None:
        if (self.trace_share is not None and scope["type"] == "http"
                and not tracing.decide(scope["path"], scope["headers"], self.trace_share)):
            scope["fastapi.telemetry"] = None
        await super().__call__(scope, receive, send)


class TelemetryMiddleware:
    def __init__(self, app, metrics: Metrics | None = None) -> None:
        self.app = app
        self.observe = metrics.observe if metrics is not None else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500
        rid = _request_id(scope["headers"])
        token = logs.request_id.set(rid.decode())

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.request_id.reset(token)
            if self.observe is not None:
                route = scope.get("route")
                self.observe(scope["method"], getattr(route, "path", None) or "unmatched", status,
                             time.perf_counter() - started)
