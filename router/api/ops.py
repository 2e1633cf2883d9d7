"""Operational endpoints: queues, workers, health, readiness, metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from turnout.core.redis_keys import LANES
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
                "drain_per_s": round(state.drain_per_s.get(q, 0.0), 3),
                "estimated_wait_s": _rounded(state.estimated_wait_s(q, LANES[-1])),
                "lanes": {lane: {"depth": (state.lane_depths.get(q) or {}).get(lane, 0),
                                 "drain_per_s": round(
                                     (state.lane_drain_per_s.get(q) or {}).get(lane, 0.0), 3),
                                 "estimated_wait_s": _rounded(state.estimated_wait_s(q, lane))}
                          for lane in LANES},
                "workers": len(state.consumers(q)),
                "max_depth": services.table.queue_config(q).max_depth,
            }
            for q in services.live.known_queues()
        ]
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@router.get("/v1/workers")
async def workers(services: ServicesDep) -> dict[str, Any]:
    """Each live worker's heartbeat (turnout.core.messages.Heartbeat): every
    field always present, null where it does not apply; ``last_seen`` is
    when it was sent."""
    await services.live.refresh()
    return {
        "workers": [
            _shown(beat.to_wire()) | {"last_seen": beat.ts} for beat in services.live.workers
        ]
    }


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat as /v1/workers shows it: its send time is ``last_seen``."""
    # Version states are shown per model (GET /v1/models/{name}), not here.
    for internal in ("ts", "started_at", "versions"):
        doc.pop(internal, None)
    return doc


@router.get("/v1/devices")
async def devices(services: ServicesDep) -> dict[str, Any]:
    """One row per GPU that a live worker is pinned to, with NVML's figures."""
    await services.live.refresh()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for w in services.live.workers:
        if w.kind != "gpu" or w.device == "cpu":
            continue
        gpu = w.gpu.to_wire() if w.gpu is not None else {}
        key = (w.host or "?", gpu.get("uuid") or f"index-{w.gpu_index}")
        row = rows.setdefault(
            key,
            {
                "host": w.host,
                "index": w.gpu_index,
                "queue": f"gpu.{w.gpu_index}",
                "workers": [],
                "busy": 0,
                "telemetry": w.telemetry,
                **{k: v for k, v in gpu.items() if v is not None},
            },
        )
        row["workers"].append(w.name)
        row["busy"] += w.busy
        row["models"] = sorted(set(row.get("models", [])) | set(w.models))
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
