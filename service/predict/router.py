from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from service.http.auth import authorize, openapi_security
from service.http.errors import InvalidInput, PayloadTooLarge, errors
from service.http.forms import read_form
from service.http.ratelimit import spend
from service.keys.service import Scope
from service.predict import images
from service.predict.service import (
    DEFAULT_TOP_K,
    answer,
    check_ref,
    check_top_k,
    checked_images_inline,
    checked_inline,
    parse_request,
    predict,
    predict_images,
    predict_parsed,
)
from service.serving.rollouts import Routing, answered, routing_key
from service.serving.routing import SMALL_BODY, RequestRoute, form_properties

router = APIRouter(tags=["predict"], route_class=RequestRoute)


class PredictRequest(BaseModel):
    """Documentation only: the body is parsed by hand, since pydantic would cost more than the model."""

    instances: list[list[float] | list[list[float]]] = Field(
        description="Digits, each a flat list of pixels or a list of pixel rows, on the training data's scale "
                    "(see the model's `value_range`).")
    model: str | None = Field(None, description="Model id, `name` (newest version), `name@3` or `name@production`; "
                                                "default: TRAINSERVE_DEFAULT_CLASSIFIER, else the one classifier at "
                                                "production (422 listing the models when none is, or several are).")
    top_k: int = Field(DEFAULT_TOP_K, ge=1, description="How many of the likeliest labels to list.")


class PredictImages(BaseModel):
    images: list[bytes] = Field(min_length=1, description="One or more PNG or JPEG files, any size and colour "
                                                          "depth.")
    model: str | None = None
    top_k: int = DEFAULT_TOP_K


class Prediction(BaseModel):
    label: int
    probabilities: list[float]
    top_k: list[dict[str, float]]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: dict[str, Any] = Field(description="The model version that answered: id, name, version.")


@router.post(
    "/predict",
    responses=errors(404, 413, 422, 429),
    response_model=PredictResponse,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "required": ["images"],
                                           "properties": form_properties(PredictImages)}},
    }}, **openapi_security(Scope.predict)},
)
async def predict_digits(request: Request) -> Response:
    """Classify handwritten digits: JSON pixel arrays (the TensorFlow Serving / KServe v1 `instances`
    convention), or image files as multipart form data (field `images`, repeated for a batch)."""
    await authorize(request, Scope.predict.value)
    spend(request, "inference")
    state = request.app.state
    settings, router = state.settings, state.rollouts
    routing = Routing(state.models, router, settings.default_classifier, routing_key(router, request.headers),
                      state.prediction_log)
    inline = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with read_form(
                request, max_files=settings.max_batch, max_fields=10,
                too_many_files=PayloadTooLarge(f"more than {settings.max_batch} images in one request; send at most "
                                               f"{settings.max_batch} per call (TRAINSERVE_MAX_BATCH)"),
                too_many_fields=InvalidInput("too many form fields; /predict takes images, model and top_k")) as form:
            uploads = [f for f in form.getlist("images") if isinstance(f, UploadFile)]
            if not uploads:
                raise InvalidInput('send the digit images as form files named "images"')
            files = []
            for upload in uploads:
                if upload.size is not None and upload.size > settings.max_image_bytes:
                    raise InvalidInput(f"{upload.filename}: {upload.size:,} bytes; images may be at most "
                                       f"{settings.max_image_bytes:,} bytes", status_code=413)
                files.append((upload.filename or "image", await upload.read()))
            images.check_pixels(files, settings.max_request_pixels)
            ref = check_ref(form.get("model") or None)
            top_k = check_top_k(form.get("top_k", DEFAULT_TOP_K))
        inline = checked_images_inline(files, ref, routing)
        off_loop = partial(predict_images, files, ref, top_k, routing)
    else:
        body = await request.body()
        if len(body) > SMALL_BODY:  # a large batch is parsed and run off the event loop
            off_loop = partial(predict, body, routing, settings.max_batch)
        else:
            parsed = parse_request(body, settings.max_batch)
            inline, top_k = checked_inline(parsed, routing), parsed.top_k
            off_loop = partial(predict_parsed, parsed, routing)
    if inline is None:  # a database lookup, a model to load, or much to parse or decode
        result = await run_in_threadpool(off_loop)
    else:  # one forward pass with the other requests that are ready now
        model, ticket, batch = inline
        try:
            rows = await state.batcher.probabilities(model, batch)
        except BaseException:
            if ticket is not None:
                ticket.failed()
            raise
        answered(routing, model, ticket, batch, rows, batch=batch)
        result = answer(model, rows, top_k)
    # orjson writes floats fastest; RequestRoute sends the Response as it is.
    return Response(orjson.dumps(result), media_type="application/json")
