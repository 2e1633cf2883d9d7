"""/v1/models: the catalogue, and prediction by model name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import Scope

from turnout.core.errors import NoCapacity, QueueFull, TurnoutError
from turnout.core.redis_keys import DEFAULT_LANE
from turnout.core.routes import Flow, describe_steps, flow_input
from turnout.router.access import capped_priority, owner_of
from turnout.router.api.bodies import predict_body
from turnout.router.api.deps import Services, ServicesDep
from turnout.router.flows import plan_for
from turnout.router.routing import choose_queue
from turnout.router.validation import image_failure, parse_predict_body

router = APIRouter(prefix="/v1/models", tags=["models"])


class PredictRequest(BaseModel):
    """The predict body; documented here, parsed by hand for exact messages."""

    inputs: list[Any] = Field(description="rows: numbers (tabular), objects (columns), nested "
                                          "lists (tensor) or strings (text)")
    priority: str = Field("normal", description="the lane: high, normal or low")
    timeout_s: float | None = Field(None, gt=0, description="seconds from arrival within which "
                                    "it must start; else 504 DeadlineExceeded, unrun")
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
                "version": (default := services.live.serving_for(route.name).default_for(route)),
                # The default version's own schema (an added version carries one).
                "input": services.dispatcher.schemas.input(route, default).describe(),
                "max_rows": route.max_rows,
                "available": now is not None,
                # Where a request would run if sent now.
                "serving_queue": now,
                "serving_workers": sorted(w.name for w in workers),
                "unavailable_because": why,
            }
        )
    for flow in services.table.flows.values():
        models.append(_flow_entry(services, flow))
    return {"models": models}


def _flow_entry(services: Services, flow: Flow) -> dict[str, Any]:
    """A pipeline or ensemble as the catalogue lists it: available when each
    of its steps could run now."""
    table, state = services.table, services.live.state
    why: str | None = None
    try:
        plan = plan_for(flow, table, services.live, None, DEFAULT_LANE)
    except (NoCapacity, QueueFull) as exc:
        plan, why = (), str(exc)
    schema = flow_input(flow, table.routes)
    first = plan[0].queue if plan else None
    return {
        "name": flow.name,
        "framework": flow.kind,
        "queue": first,
        "version": "+".join(f"{s.name}@{s.version}" for s in plan if s.version) or None,
        "input": schema.describe() if schema is not None else None,
        "max_rows": flow.max_rows,
        "available": bool(plan),
        "serving_queue": first,
        "serving_workers": sorted(w.name for w in state.servers(plan[0].queue, plan[0].name))
        if plan and plan[0].kind == "model" else [],
        "unavailable_because": why,
        "steps": describe_steps(flow),
    }


_PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "finished within `wait`: the task body"},
    202: {"description": "queued: poll `status_url`"},
    404: {"description": "unknown model (or version)"},
    413: {"description": "body too large"},
    422: {"description": "bad input"},
    429: {"description": "queue full"},
    503: {"description": "no live worker for the route, or broker down"},
}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post("/{name}/predict", responses=_PREDICT_RESPONSES, openapi_extra=_PREDICT_BODY)
async def predict(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Predict with the model's default version (or its canary's share of
    requests; `X-Route-Key` keeps a caller on one side)."""
    status, body, headers = await predict_response(
        services, name, await request.body(), route_key=request.headers.get("x-route-key"),
        owner=owner_of(request.scope), idempotency_key=request.headers.get("idempotency-key"),
        scope=request.scope, content_type=request.headers.get("content-type"),
        query=request.url.query,
    )
    return JSONResponse(body, status_code=status, headers=headers)


@router.post(
    "/{name}/versions/{version}/predict",
    responses={**_PREDICT_RESPONSES, 409: {"description": "no live worker has it loaded"}},
    openapi_extra=_PREDICT_BODY,
)
async def predict_version(
    name: str, version: str, request: Request, services: ServicesDep
) -> JSONResponse:
    """Predict with one version of the model, and only that one."""
    status, body, headers = await predict_response(
        services, name, await request.body(), version=version, owner=owner_of(request.scope),
        idempotency_key=request.headers.get("idempotency-key"), scope=request.scope,
        content_type=request.headers.get("content-type"), query=request.url.query,
    )
    return JSONResponse(body, status_code=status, headers=headers)


async def predict_response(
    services: Services,
    name: str,
    raw: bytes,
    version: str | None = None,
    route_key: str | None = None,
    owner: str | None = None,
    idempotency_key: str | None = None,
    scope: Scope | None = None,
    content_type: str | None = None,
    query: str = "",
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The predict endpoints, free of any framework: (status, body, headers).
    Turnout's errors propagate, to be answered by ``error_response``. The
    body is JSON, or an image (``bodies.predict_body``)."""
    table = services.table
    label = name if name in table.routes or name in table.flows else "(unknown)"
    metrics = services.metrics
    try:
        if content_type is None or content_type.startswith("application/json"):
            inputs, wait, asked = parse_predict_body(raw, services.settings.max_wait_s)
        else:
            inputs, wait, asked = await predict_body(raw, content_type, query,
                                                     services.settings.max_wait_s)
        priority = asked.priority if scope is None else \
            capped_priority(scope, asked.priority, DEFAULT_LANE)
        submitted, view = await services.dispatcher.predict(
            name, inputs, wait, version, route_key, owner=owner, idempotency_key=idempotency_key,
            priority=priority, timeout_s=asked.timeout_s,
        )
    except TurnoutError as exc:
        # No version label on errors: a client's made-up version must not
        # become a series of its own.
        metrics.request(label, "", exc.status_code)
        raise
    if submitted.fallback_used:
        metrics.fallbacks.labels(name).inc()
    bad = image_failure(view) if view is not None else None
    if bad is not None:
        metrics.request(label, "", bad.status_code)
        raise bad
    if view is not None:
        served = str(view.get("version") or submitted.version)
        metrics.request(label, served, 200)
        return 200, view, {}
    metrics.request(label, submitted.version, 202)
    url = f"/v1/tasks/{submitted.task_id}"
    body = {
        "task_id": submitted.task_id,
        "status": "PENDING",
        "model": submitted.model,
        "queue": submitted.queue,
        "version": submitted.version,
        "status_url": url,
    }
    return 202, body, {"Location": url}


class DefaultRequest(BaseModel):
    version: str = Field(description="the version to serve (it must exist)")
    canary_percent: float | None = Field(
        None, description="send this share of requests to `version` and the rest to the "
        "default; 0 ends a canary"
    )
    wait: float | None = Field(
        None, ge=0, le=3600, description="seconds to wait for the version to load everywhere "
        "(default TURNOUT_ROLLOUT_WAIT_S); the rollout goes on after"
    )


@router.get("/{name}", responses={404: {"description": "unknown model"}})
async def describe_model(name: str, services: ServicesDep) -> dict[str, Any]:
    """Every version of a model: metrics, parameters, and its state on each worker."""
    return await services.lifecycle.describe(name)


@router.put(
    "/{name}/default",
    responses={
        200: {"description": "the new default (or canary) serves"},
        202: {"description": "still loading; the rollout goes on"},
        404: {"description": "unknown model or version"},
        409: {"description": "a worker could not load it; the old default serves on"},
    },
)
async def set_default(name: str, body: DefaultRequest, services: ServicesDep) -> JSONResponse:
    """Roll out a version with no downtime, start or end a canary, or roll back."""
    version = str(body.version)
    status, out = await services.lifecycle.set_default(
        name, version, body.canary_percent, body.wait
    )
    headers = {"Location": out["status_url"]} if status == 202 else {}
    return JSONResponse(out, status_code=status, headers=headers)
