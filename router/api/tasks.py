"""/v1/tasks: a task's state and result, and revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from router.api.deps import ServicesDep

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.get("/{task_id}", responses={404: {"description": "never issued by this router"}})
async def get_task(task_id: str, services: ServicesDep) -> dict[str, Any]:
    return await services.dispatcher.task(task_id)


@router.delete(
    "/{task_id}",
    status_code=202,
    responses={404: {"description": "unknown task"}, 409: {"description": "already finished"}},
)
async def revoke_task(task_id: str, services: ServicesDep) -> JSONResponse:
    return JSONResponse(await services.dispatcher.revoke(task_id), status_code=202)
