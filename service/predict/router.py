from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.predict.service import predict

router = APIRouter(tags=["predict"])


class PredictRequest(BaseModel):
    """Documentation only: the body is parsed by hand, since pydantic would cost more than the model."""

    instances: list[list[float] | list[list[float]]] = Field(
        description="Digits, each a flat list of pixels or a list of pixel rows, on the training data's scale "
                    "(see the model's `value_range`).")
    model: str | None = Field(None, description="Model id, `name` (newest version), `name@3` or `name@production`; "
                                                "default: TRAINSERVE_DEFAULT_CLASSIFIER, else the newest classifier.")


class Prediction(BaseModel):
    label: int
    probabilities: list[float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: dict[str, Any] = Field(description="The model version that answered: id, name, version.")


@router.post(
    "/predict",
    response_model=PredictResponse,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": PredictRequest.model_json_schema()}}}},
)
async def predict_digits(request: Request) -> JSONResponse:
    """Classify handwritten digits (the TensorFlow Serving / KServe v1 `instances` convention)."""
    body = await request.body()
    settings = request.app.state.settings
    result = await run_in_threadpool(predict, body, request.app.state.models, settings.max_batch,
                                     settings.default_classifier)
    return JSONResponse(result)  # returned as a Response: FastAPI skips re-validating it
