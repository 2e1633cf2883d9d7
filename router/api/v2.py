"""/v2: the Open Inference Protocol (KServe's V2, Triton's HTTP API), beside
v1 and through the same access check, routing, micro-batching, versions,
metrics and errors (answered as ``{"error": ...}`` here). ``infer`` waits
for its answer: the protocol has no polling."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.types import Scope

from turnout import __version__
from turnout.core.catalog import list_versions
from turnout.core.errors import (
    DeadlineExceeded,
    InvalidInput,
    ModelFailed,
    NoCapacity,
    QueueFull,
    TurnoutError,
    UnknownModel,
    WaitTimedOut,
)
from turnout.core.inputs import InputKind
from turnout.core.oip import bind
from turnout.core.redis_keys import DEFAULT_LANE
from turnout.core.routes import Route, flow_input
from turnout.router import oip
from turnout.router.access import capped_priority, owner_of
from turnout.router.api.deps import Services, ServicesDep
from turnout.router.routing import choose_queue
from turnout.router.validation import image_failure

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a malformed body"}, 404: {"description": "unknown model or version"},
    413: {"description": "body too large"}, 422: {"description": "an input that does not fit"},
    429: {"description": "queue full (Retry-After)"}, 503: {"description": "no live worker"},
    504: {"description": "no answer in time"},
}


@router.get("")
async def server_metadata() -> dict[str, Any]:
    return {"name": "turnout", "version": __version__, "extensions": oip.EXTENSIONS}


@router.get("/health/live")
async def live() -> dict[str, Any]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "Redis unreachable"}})
async def ready(services: ServicesDep) -> JSONResponse:
    try:
        await services.client.ping()
    except (RedisError, OSError):
        return JSONResponse({"ready": False}, 503)
    return JSONResponse({"ready": services.dispatcher.watcher.subscribed},
                        200 if services.dispatcher.watcher.subscribed else 503)


def _model(services: Services, name: str, version: str | None
           ) -> tuple[Route | None, str | None, InputKind, dict[str, Any]]:
    """(route, version, input schema, the version's meta) of a model or, for
    a pipeline or ensemble, (None, None, its first step's schema, {})."""
    table = services.table
    flow = table.flows.get(name)
    if flow is not None:
        schema = flow_input(flow, table.routes)
        if schema is None:
            raise UnknownModel(f"model {name!r}: its first step takes no declared input")
        if version is not None:
            raise UnknownModel(f"model {name!r} is a {flow.kind}: it has no versions of its own")
        return None, None, schema, {}
    route = table.require(name)
    chosen = version or services.live.serving_for(name).default_for(route)
    meta = services.dispatcher.schemas.meta(route, chosen)
    return route, chosen, services.dispatcher.schemas.input(route, chosen), meta


@router.get("/models/{name}", responses=_ERRORS)
async def model_metadata(name: str, services: ServicesDep) -> dict[str, Any]:
    return _metadata(services, name, None)


@router.get("/models/{name}/versions/{version}", responses=_ERRORS)
async def version_metadata(name: str, version: str, services: ServicesDep) -> dict[str, Any]:
    return _metadata(services, name, version)


def _metadata(services: Services, name: str, version: str | None) -> dict[str, Any]:
    route, chosen, schema, meta = _model(services, name, version)
    versions = [chosen] if version is not None else (
        [v.version for v in list_versions(services.settings.models_dir, route)] if route else [])
    output = route.output.describe() if route is not None and route.output is not None else None
    return {
        "name": name,
        "versions": [v for v in versions if v is not None],
        "platform": meta.get("format") or (route.framework if route else "pipeline"),
        "inputs": [s.describe() for s in schema.v2_inputs()],
        "outputs": [s.describe() for s in oip.output_specs(meta, output)],
    }


@router.get("/models/{name}/ready", responses=_ERRORS)
async def model_ready(name: str, services: ServicesDep) -> Response:
    return _ready(services, name, None)


@router.get("/models/{name}/versions/{version}/ready", responses=_ERRORS)
async def version_ready(name: str, version: str, services: ServicesDep) -> Response:
    return _ready(services, name, version)


def _ready(services: Services, name: str, version: str | None) -> Response:
    """200 when a request sent now would run (a live worker serves the
    model, or that version); else 400, as Triton answers a model not ready."""
    route, _, _, _ = _model(services, name, version)
    ready = True
    if route is not None:
        try:
            choose_queue(route, services.table, services.live.state,
                         version, None, DEFAULT_LANE)
        except (NoCapacity, QueueFull):
            ready = False
        if ready and version is not None:
            ready = any(w.serves(name, version) for w in services.live.state.workers)
    return JSONResponse({"name": name, "ready": ready}, 200 if ready else 400)


@router.post("/models/{name}/infer", responses=_ERRORS)
async def infer(name: str, request: Request, services: ServicesDep) -> Response:
    return _response(await infer_response(services, name, None, await request.body(),
                                          request.scope))


@router.post("/models/{name}/versions/{version}/infer", responses=_ERRORS)
async def infer_version(name: str, version: str, request: Request,
                        services: ServicesDep) -> Response:
    return _response(await infer_response(services, name, version, await request.body(),
                                          request.scope))


def _response(answer: tuple[int, bytes, str, dict[str, str]]) -> Response:
    status, data, content_type, headers = answer
    return Response(data, status_code=status, media_type=content_type, headers=headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def infer_response(services: Services, name: str, version: str | None, raw: bytes,
                         scope: Scope) -> tuple[int, bytes, str, dict[str, str]]:
    """``infer``, free of any framework (the fast path calls it as FastAPI's
    route does): (status, body, content type, headers). Turnout's errors
    propagate, to be answered by ``error_response``."""
    table = services.table
    label = name if name in table.routes or name in table.flows else "(unknown)"
    try:
        parsed = oip.parse_infer(raw, _header(scope, oip.HEADER_LENGTH.encode()))
        route, _, schema, meta = _model(services, name, version)
        specs = schema.v2_inputs()
        rows = schema.from_v2(bind(name, specs, oip.tensors(parsed, specs)))
        priority = parsed.parameters.get("priority", DEFAULT_LANE)
        if not isinstance(priority, str):
            raise InvalidInput("parameters.priority: expected high, normal or low")
        priority = capped_priority(scope, priority, DEFAULT_LANE)
        timeout = parsed.parameters.get("timeout_s")
        if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool)
                                    or timeout <= 0):
            raise InvalidInput("parameters.timeout_s: expected a number of seconds above 0")
        submitted, view = await services.dispatcher.predict(
            name, rows, services.settings.max_wait_s, version, _header(scope, b"x-route-key"),
            owner=owner_of(scope), idempotency_key=_header(scope, b"idempotency-key"),
            priority=priority, timeout_s=timeout,
        )
        if view is None:
            raise WaitTimedOut(
                f"no answer within {services.settings.max_wait_s:g} s; the request is still "
                f"queued or running, and its answer will be at /v1/tasks/{submitted.task_id}")
        _raise_failure(view)
        output = route.output.describe() if route is not None and route.output is not None \
            else None
        outputs, tail = oip.outputs(view, oip.output_specs(meta, output), parsed)
    except TurnoutError as exc:
        services.metrics.request(label, "", exc.status_code)
        raise
    served = str(view.get("version") or submitted.version or "")
    services.metrics.request(label, served, 200)
    body: dict[str, Any] = {"model_name": name, "model_version": served, "outputs": outputs}
    if parsed.id is not None:
        body["id"] = parsed.id
    head = orjson.dumps(body)
    if not tail:
        return 200, head, "application/json", {}
    return 200, head + tail, "application/octet-stream", {
        "Inference-Header-Content-Length": str(len(head))}


def _raise_failure(view: dict[str, Any]) -> None:
    """A task that ended without an answer, as v2's error: its deadline
    passed (504), or the model failed on it (422)."""
    status = view.get("status")
    if status == "SUCCESS":
        return
    bad = image_failure(view)
    if bad is not None:
        raise bad
    error = str(view.get("error") or status)
    if error.startswith("DeadlineExceeded"):
        raise DeadlineExceeded(error.removeprefix("DeadlineExceeded: "))
    raise ModelFailed(f"the model failed on this request: {error}")
