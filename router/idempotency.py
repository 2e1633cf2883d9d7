"""Idempotency-Key: a request sent again with the same key (a client's retry
after a lost answer) gets the task the first one made, never a second.

A key is claimed for the new task's id in one Lua call. A claim names its
task until the task's record exists, and then for as long as the record; a
claim whose task never got queued (the broker failed mid-request, or the API
process that took it died) lapses after a few seconds, so the retry makes the
task instead. A retry that finds a claim whose task is not queued yet waits
for one or the other: the record (the first request was still queueing it)
or the lapse; it never answers with a task that may never exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from turnout.core import lua, redis_keys
from turnout.core.errors import InvalidInput

LAPSE_S = 10
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")


def claim_key(owner: str | None, idempotency_key: str) -> str:
    """The claim's Redis key: per API key, so that callers never collide."""
    if not _VALID.match(idempotency_key):
        raise InvalidInput(
            "Idempotency-Key: expected 1 to 255 visible ASCII characters (a UUID, say), got "
            f"{len(idempotency_key)} characters"
        )
    return redis_keys.idempotency(owner or "-", idempotency_key)


class Claims:
    def __init__(self, client: aioredis.Redis, ttl_s: int, lapse_s: float = LAPSE_S) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._lapse_s = lapse_s
        self._script = client.register_script(lua.source("idempotency_claim"))

    async def claim(self, claim: str, new_id: str, record_prefix: str) -> str | None:
        """None when ``claim`` is now ``new_id``'s; else the id it names,
        once that id's record exists (or ``claim`` lapsed and is ours)."""
        deadline = time.monotonic() + self._lapse_s + 1
        while True:
            earlier = await self._script(
                keys=[claim], args=[new_id, self._ttl_s, time.time(), record_prefix, self._lapse_s]
            )
            if earlier is None:
                return None
            earlier = earlier.decode() if isinstance(earlier, bytes) else str(earlier)
            if await self._client.exists(record_prefix + earlier) or time.monotonic() > deadline:
                return earlier
            await asyncio.sleep(0.05)

    async def take(self, idempotency_key: str | None, owner: str | None, new_id: str,
                   record_prefix: str) -> tuple[str | None, str | None]:
        """(the claim, the id an earlier use of ``idempotency_key`` made, if
        any); (None, None) without a key."""
        if idempotency_key is None:
            return None, None
        claim = claim_key(owner, idempotency_key)
        return claim, await self.claim(claim, new_id, record_prefix)

    async def release(self, claim: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.delete(claim)
