"""The ceiling for /predict: an endpoint on the same HTTP stack that only parses the same JSON body."""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/parse")
async def parse(request: Request) -> Response:
    """Parses the body with the same parser /predict uses, and answers a small JSON document."""
    body = orjson.loads(await request.body())
    return Response(orjson.dumps({"instances": len(body["instances"])}), media_type="application/json")
