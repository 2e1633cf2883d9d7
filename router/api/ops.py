"""Operational endpoints: queues, workers, health, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from turnout.router.api.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/v1/queues")
async def queues(services: ServicesDep) -> dict[str, Any]:
    await services.live.refresh()
    state = services.live.state
    return {
        "queues": [
            {
                "name": q,
                "depth": state.depths.get(q, 0),
                "workers": len(state.consumers(q)),
                "max_depth": services.table.queue_config(q).max_depth,
            }
            for q in services.live.known_queues()
        ]
    }


@router.get("/v1/workers")
async def workers(services: ServicesDep) -> dict[str, Any]:
    await services.live.refresh()
    fields = (
        "name", "incarnation", "kind", "queues", "device", "gpu_index", "models", "refused",
        "concurrency",
        "busy", "current_tasks", "reloading", "host", "pid", "cuda_visible_devices", "memory_limit_mb",
        "children", "telemetry", "gpu",
    )
    return {
        "workers": [
            {k: w[k] for k in fields if k in w} | {"last_seen": w["ts"]}
            for w in services.live.workers
        ]
    }


@router.get("/v1/devices")
async def devices(services: ServicesDep) -> dict[str, Any]:
    """One row per GPU that a live worker is pinned to, with NVML's figures."""
    await services.live.refresh()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for w in services.live.workers:
        if w.get("kind") != "gpu" or w.get("device") == "cpu":
            continue
        gpu = w.get("gpu") or {}
        key = (w.get("host", "?"), gpu.get("uuid") or f"index-{w.get('gpu_index')}")
        row = rows.setdefault(
            key,
            {
                "host": w.get("host"),
                "index": w.get("gpu_index"),
                "queue": f"gpu.{w.get('gpu_index')}",
                "workers": [],
                "busy": 0,
                "telemetry": w.get("telemetry"),
                **gpu,
            },
        )
        row["workers"].append(w["name"])
        row["busy"] += int(w.get("busy", 0))
        row["models"] = sorted(set(row.get("models", [])) | set(w.get("models", [])))
        row["depth"] = services.live.state.depths.get(row["queue"], 0)
    return {"devices": sorted(rows.values(), key=lambda r: (str(r["host"]), r["index"] or 0))}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        await services.client.ping()
    except (RedisError, OSError) as exc:
        return JSONResponse({"status": "not ready", "broker": f"unreachable: {exc}"}, 503)
    if not services.dispatcher.watcher.subscribed:
        # Without it, a request with `wait` would sit out its whole wait.
        return JSONResponse({"status": "not ready", "results": "not subscribed yet"}, 503)
    return JSONResponse(
        {"status": "ready", "broker": "ok", "routes": len(services.table.routes)}, 200
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> Response:
    """Prometheus text format: this process's requests and tasks, and the
    cluster's queues, workers and GPUs."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
