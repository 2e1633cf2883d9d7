"""Administration: re-reading the route table without a restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from turnout.core.errors import BadRouteTable, ConfigError
from turnout.core.routes.shared import prepare, queue_publish
from turnout.router.api.deps import ServicesDep

router = APIRouter(prefix="/v1/admin", tags=["administration"])


@router.post(
    "/reload",
    responses={422: {"description": "the file is bad (the key is named); the last good "
                                    "table stays in force"}},
)
async def reload(services: ServicesDep) -> dict[str, Any]:
    """Re-read the route table file and put it in force in every API process
    and every worker (models added, removed or re-routed), with no restart."""
    path = services.settings.routes_file
    try:
        text, table = prepare(path, services.settings.models_dir)
    except ConfigError as exc:
        raise BadRouteTable(f"route table not reloaded, the last good one stays: {exc}") from None
    before = services.table
    pipe = services.client.pipeline(transaction=True)
    queue_publish(pipe, path, text)
    generation, _ = await pipe.execute()
    services.live.adopt(int(generation), table)
    old, new = set(before.routes), set(table.routes)
    return {
        "generation": int(generation),
        "source": str(path),
        "models": sorted(new),
        "added": sorted(new - old),
        "removed": sorted(old - new),
        "changed": sorted(n for n in old & new if before.routes[n] != table.routes[n]),
    }
