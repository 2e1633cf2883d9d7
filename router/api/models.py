"""/v1/models: the catalogue, and prediction by model name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from router.api.deps import Services, ServicesDep
from router.routing import choose_queue
from router.validation import parse_predict_body
from turnout.errors import NoCapacity, QueueFull, TurnoutError

router = APIRouter(prefix="/v1/models", tags=["models"])


class PredictRequest(BaseModel):
    """The predict body; documented here, parsed by hand for exact messages."""

    inputs: list[Any] = Field(description="rows of numbers (tabular) or strings (text)")
    wait: float = Field(0, ge=0, description="seconds to wait for the result; 0 answers 202 at once")


@router.get("")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    models = []
    state = services.live.state
    for route in services.table.routes.values():
        why: str | None = None
        try:
            now: str | None = choose_queue(route, services.table, state).queue
        except (NoCapacity, QueueFull) as exc:
            now, why = None, str(exc)
        workers = state.servers(now, route.name) if now else []
        models.append(
            {
                "name": route.name,
                "framework": route.framework,
                "queue": route.queue,
                "devices": list(route.devices) if route.devices is not None else None,
                "fallback": route.fallback,
                "version": route.version,
                "input": route.input.describe(),
                "max_rows": route.max_rows,
                "available": now is not None,
                # Where a request would run if sent now.
                "serving_queue": now,
                "serving_workers": sorted(w.name for w in workers),
                "unavailable_because": why,
            }
        )
    return {"models": models}


@router.post(
    "/{name}/predict",
    responses={
        200: {"description": "finished within `wait`: the task body"},
        202: {"description": "queued: poll `status_url`"},
        404: {"description": "unknown model"},
        413: {"description": "body too large"},
        422: {"description": "bad input"},
        429: {"description": "queue full"},
        503: {"description": "no live worker for the route, or broker down"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    },
)
async def predict(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    status, body, headers = await predict_response(services, name, await request.body())
    return JSONResponse(body, status_code=status, headers=headers)


async def predict_response(
    services: Services, name: str, raw: bytes
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The predict endpoint, free of any framework: (status, body, headers).
    Turnout's errors propagate, to be answered by ``error_response``."""
    label = name if name in services.table.routes else "(unknown)"
    try:
        inputs, wait = parse_predict_body(raw, services.settings.max_wait_s)
        submitted, view = await services.dispatcher.predict(name, inputs, wait)
    except TurnoutError as exc:
        services.metrics.requests[(label, exc.status_code)] += 1
        raise
    if submitted.fallback_used:
        services.metrics.fallbacks[name] += 1
    if view is not None:
        services.metrics.requests[(label, 200)] += 1
        return 200, view, {}
    services.metrics.requests[(label, 202)] += 1
    url = f"/v1/tasks/{submitted.task_id}"
    body = {
        "task_id": submitted.task_id,
        "status": "PENDING",
        "model": submitted.model,
        "queue": submitted.queue,
        "status_url": url,
    }
    return 202, body, {"Location": url}
