"""A FastAPI route class for hot endpoints that take the request and build their response themselves."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class RequestRoute(APIRoute):
    """The endpoint is called with the request and returns a Response, as FastAPI documents for custom route
    classes: the route is in the OpenAPI document and its errors reach the app's handlers, but no
    dependencies are solved and no result is validated for it. On /predict that work cost 15-20 µs a request
    for nothing (docs/benchmarks.md)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint
