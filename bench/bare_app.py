"""The ceiling for /predict: an endpoint on the same HTTP stack that only parses the same JSON body.

``/parse`` is a plain FastAPI endpoint, the ceiling the serving goal is measured against; ``/parse-lean`` is
the same on the route class /predict uses (no dependency solving), the ceiling of that lighter stack.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI, Request, Response

from service.serving.routing import RequestRoute

app = FastAPI()
lean = APIRouter(route_class=RequestRoute)


async def parse(request: Request) -> Response:
    """Parses the body with the same parser /predict uses, and answers a small JSON document."""
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({"instances": len(body["instances"])}), media_type="application/json")


app.post("/parse")(parse)
lean.post("/parse-lean")(parse)
app.include_router(lean)
