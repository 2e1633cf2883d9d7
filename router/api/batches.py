"""Batch jobs: many rows in, chunks run across the route's workers, progress out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from turnout.router.access import capped_priority, owner_of, viewer_of
from turnout.router.api.deps import ServicesDep
from turnout.router.validation import BATCH_LANE, parse_batch_body

router = APIRouter(tags=["batches"])


class BatchRequest(BaseModel):
    """The batch body; documented here, parsed by hand for exact messages."""

    inputs: list[Any] = Field(description="rows of numbers (tabular) or strings (text)")
    chunk_rows: int | None = Field(None, ge=1, description="rows per chunk (default: max_batch)")
    priority: str = Field("low", description="the lane its chunks wait in: high, normal or low")


@router.post(
    "/v1/models/{name}/batch",
    status_code=202,
    responses={
        202: {"description": "queued: poll `status_url` for progress and results"},
        404: {"description": "unknown model"},
        413: {"description": "body too large"},
        422: {"description": "bad input"},
        429: {"description": "queue full"},
        503: {"description": "no live worker for the route, or broker down"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
        }
    },
)
async def submit_batch(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    inputs, chunk_rows, asked = parse_batch_body(await request.body(),
                                                 services.jobs.chunk_limit(name))
    body = await services.jobs.submit(name, inputs, chunk_rows, owner=owner_of(request.scope),
                                      idempotency_key=request.headers.get("idempotency-key"),
                                      priority=capped_priority(request.scope, asked.priority,
                                                               BATCH_LANE),
                                      timeout_s=asked.timeout_s)
    return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})


@router.get("/v1/batches/{batch_id}", responses={404: {"description": "unknown batch"}})
async def get_batch(batch_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    return await services.jobs.status(batch_id, viewer_of(request.scope))
