"""Training jobs: start one (or a hyper-parameter search), watch it, cancel it."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from turnout.core.errors import InvalidInput
from turnout.router.api.deps import ServicesDep

router = APIRouter(tags=["training"])


class TrainRequest(BaseModel):
    """The train body; documented here, validated by the model's trainer."""

    dataset: str = Field(description="a dataset bundled with scikit-learn (iris, digits, wine, "
                         "breast_cancer) or the name of a CSV/Parquet file in TURNOUT_DATA_DIR")
    params: dict[str, Any] = Field(default_factory=dict, description="trainer parameters "
                                   "(sklearn: C, max_iter, l1_ratio, solver; torch: lr, epochs, "
                                   "batch_size)")
    seed: int = Field(0, description="seeds the held-out split and the trainer")
    search: dict[str, list[Any]] | None = Field(None, description="a grid: each combination "
                                                "trains as its own trial; the best is kept")


@router.post(
    "/v1/models/{name}/train",
    status_code=202,
    responses={404: {"description": "unknown model or dataset"},
               422: {"description": "bad params"},
               503: {"description": "no live training worker for the model's lane"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": TrainRequest.model_json_schema()}}}},
)
async def train(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Train a new version of a model. It is registered, never promoted: the
    operator promotes it or starts a canary."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidInput("body: expected a JSON object with 'dataset'")
    out = await services.training.submit(name, body)
    return JSONResponse(out, status_code=202, headers={"Location": out["status_url"]})


@router.get("/v1/training/{job_id}", responses={404: {"description": "unknown job"}})
async def training_status(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """A job's state and progress: stage, epoch of epochs, percent, loss, metrics."""
    return await services.training.status(job_id)


@router.delete(
    "/v1/training/{job_id}",
    status_code=202,
    responses={404: {"description": "unknown job"}, 409: {"description": "already finished"}},
)
async def cancel_training(job_id: str, services: ServicesDep) -> dict[str, Any]:
    """Stop a job within one epoch; it registers nothing."""
    return await services.training.cancel(job_id)
