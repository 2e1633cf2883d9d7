"""/v1/admin/keys: API keys, managed over HTTP with an admin key (or with
`turnout keys` on a machine that reaches Redis)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from turnout.core import access, redis_keys
from turnout.core.errors import ConfigError, InvalidInput, UnknownKey
from turnout.router.api.deps import Services, ServicesDep

router = APIRouter(prefix="/v1/admin/keys", tags=["administration"])


class KeyRequest(BaseModel):
    name: str = Field(description="letters, digits, '_', '.', '-'")
    scope: str = Field("predict", description="predict | admin")
    rate_per_s: float | None = Field(None, gt=0, description="requests a second, per API process")
    max_priority: str | None = Field(
        None, description="high | normal | low: the highest lane its requests may ask for")


async def _reread(services: Services) -> list[access.ApiKey]:
    # In force in this process at once, not at the next refresh.
    return await services.keyring.refresh()


@router.get("")
async def list_keys(services: ServicesDep) -> dict[str, Any]:
    """Every key's name, scope and rate; never a token or its hash."""
    return {"keys": [k.public() for k in await _reread(services)]}


@router.post("", status_code=201, responses={409: {"description": "the name is taken"},
                                             422: {"description": "bad name or scope"}})
async def create_key(body: KeyRequest, services: ServicesDep) -> JSONResponse:
    """Make a key; its token is in this answer and nowhere else, ever."""
    try:
        key, token = access.new_key(body.name, body.scope, body.rate_per_s, body.max_priority)
    except ConfigError as exc:
        raise InvalidInput(exc.message) from None
    if not await services.client.hsetnx(*access.store_args(key)):
        raise access.taken(key.name)
    await services.client.set(redis_keys.API_KEYS_CLOSED, "1")
    await _reread(services)
    return JSONResponse({**key.public(), "token": token}, status_code=201)


@router.delete("/{name}", responses={404: {"description": "no such key"}})
async def revoke_key(name: str, services: ServicesDep) -> dict[str, Any]:
    """Revoke a key: refused by this process at once, by the others within a
    refresh (half a second)."""
    if not await services.client.hdel(redis_keys.API_KEYS, name):
        raise UnknownKey(f"no API key named {name!r}")
    left = await _reread(services)
    return {"name": name, "revoked": True, "keys_left": len(left)}
