"""A FastAPI route class for hot endpoints that take the request and build their response themselves."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# Bodies up to this size (about 16 digits of 784 pixels) are parsed and answered on the event loop; larger
# ones, and compressed ones, in a worker thread, so that one big request never stalls the others.
SMALL_BODY = 128 * 1024


class RequestRoute(APIRoute):
    """The endpoint is called with the request and returns a Response, as FastAPI documents for custom route
    classes: the route is in the OpenAPI document and its errors reach the app's handlers, but no
    dependencies are solved and no result is validated for it. On /predict that work cost 15-20 µs a request
    for nothing (docs/benchmarks.md)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.endpoint


def form_properties(model) -> dict:
    """A model's fields as multipart form fields: a form has no null, only a field left out."""
    properties = {}
    for name, schema in model.model_json_schema()["properties"].items():
        options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            schema = {**{k: v for k, v in schema.items() if k not in ("anyOf", "default")}, **options[0]}
        properties[name] = schema
    return properties
