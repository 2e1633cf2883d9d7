"""/v1/tasks: a task's state and result, and revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from turnout.router.access import viewer_of
from turnout.router.api.deps import ServicesDep

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("/{task_id}", responses={404: {"description": "never issued by this router"}})
async def get_task(task_id: str, request: Request, services: ServicesDep) -> dict[str, Any]:
    """A task's state and result (a predict key reads its own tasks only)."""
    return await services.dispatcher.task(task_id, viewer_of(request.scope))


@router.delete(
    "/{task_id}",
    status_code=202,
    responses={404: {"description": "unknown task"}, 409: {"description": "already finished"}},
)
async def revoke_task(task_id: str, request: Request, services: ServicesDep) -> JSONResponse:
    body = await services.dispatcher.revoke(task_id, viewer_of(request.scope))
    return JSONResponse(body, status_code=202)
