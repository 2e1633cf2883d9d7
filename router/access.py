"""Who may call what: bearer API keys checked ahead of every route, the
predict fast path and FastAPI alike.

Keys live in Redis as hashes (``turnout.core.access``); each API process keeps
them in memory, refreshed with the live view (every half second), and reads
Redis again only for a token it does not know (a key made since). With no
keys at all the API is open, but only on loopback (or on purpose, with
``--insecure-no-auth``); ``turnout api`` refuses to bind elsewhere without keys.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import redis.asyncio as aioredis
from starlette.types import Scope

from turnout.core import redis_keys
from turnout.core.access import ADMIN, PREDICT, ApiKey, find, is_loopback, parse_keys
from turnout.core.errors import Forbidden, RateLimited, Unauthorized
from turnout.core.redis_keys import LANES
from turnout.core.settings import Settings

# Open to anyone: liveness and readiness (for load balancers), and the API's
# own description with the page assets it serves itself (DOCS_ASSETS).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc",
                        "/openapi.json", "/v2/health/live", "/v2/health/ready"})
DOCS_ASSETS = "/docs-assets"
_ADMIN_CALLS = (
    ("PUT", re.compile(r"^/v1/models/[^/]+/default$")),
    ("POST", re.compile(r"^/v1/models/[^/]+/train$")),
    ("POST", re.compile(r"^/v1/models/[^/]+/versions$")),
    (None, re.compile(r"^/v1/training/")),
    (None, re.compile(r"^/v1/admin/")),
)


def required_scope(method: str, path: str, metrics_auth: bool = False) -> str | None:
    """The scope a call needs; None for the open paths. Anything not named
    (unknown paths included) needs at least ``predict``."""
    if path in OPEN_PATHS or path.startswith(DOCS_ASSETS + "/"):
        return None
    if path == "/metrics":
        return PREDICT if metrics_auth else None
    for wanted, pattern in _ADMIN_CALLS:
        if (wanted is None or wanted == method) and pattern.match(path):
            return ADMIN
    return PREDICT


class KeyRing:
    """The API keys as this process knows them, and each key's rate bucket."""

    def __init__(self, client: aioredis.Redis, open_when_empty: bool) -> None:
        self._client = client
        self.open_when_empty = open_when_empty
        self.known: list[ApiKey] | None = None  # None: not read yet
        # Keys were made once (turnout:apikeys:closed): no longer open when empty.
        self.closed = False
        # key name -> (tokens left, when counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def update(self, raw: dict[Any, Any], closed: bool) -> None:
        self.known = parse_keys(raw)
        self.closed = closed

    @property
    def open(self) -> bool:
        """Open to callers without a key: no key exists, none ever did (or an
        operator reopened it), and the API may be open (loopback, or told)."""
        return not self.known and not self.closed and self.open_when_empty

    async def refresh(self) -> list[ApiKey]:
        """Read the keys and the closed flag now (a key made a moment ago, or
        an admin call that changed them); a Redis error propagates: the call
        is answered 503, never let in."""
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(redis_keys.API_KEYS)
        pipe.exists(redis_keys.API_KEYS_CLOSED)
        raw, closed = await pipe.execute()
        self.update(raw, bool(closed))
        return self.known or []

    async def authenticate(self, header: str | None, scope: str, what: str) -> ApiKey | None:
        """The caller's key, checked for ``scope``; None when the API is open."""
        known = self.known if self.known is not None else await self.refresh()
        if header is None:
            if self.open:
                return None
            raise Unauthorized(
                f"{what} needs an API key: send 'Authorization: Bearer <token>' (an operator "
                f"makes one with `turnout keys create NAME --scope {scope}`)"
            )
        kind, _, token = header.strip().partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        key = find(known, token)
        if key is None:
            key = find(await self.refresh(), token)  # made since the last refresh?
        if key is None:
            if self.open:
                return None  # no keys at all: open, whatever was sent
            raise Unauthorized("the API key is not valid (wrong, or revoked)")
        if not key.allows(scope):
            raise Forbidden(
                f"API key {key.name!r} has scope {key.scope!r}; {what} needs scope {scope!r}"
            )
        if key.rate_per_s is not None:
            self._spend(key)
        return key

    def _spend(self, key: ApiKey) -> None:
        """A token bucket per key: ``rate_per_s`` a second, bursts of as many."""
        rate = float(key.rate_per_s or 0)
        burst = max(1.0, rate)
        now = time.monotonic()
        tokens, then = self._buckets.get(key.name, (burst, now))
        tokens = min(burst, tokens + (now - then) * rate)
        if tokens < 1:
            self._buckets[key.name] = (tokens, now)
            raise RateLimited(
                f"API key {key.name!r} is limited to {rate:g} requests a second; retry later",
                retry_after_s=max(1, math.ceil((1 - tokens) / rate)),
            )
        self._buckets[key.name] = (tokens - 1, now)


def open_when_empty(settings: Settings) -> bool:
    return settings.insecure_no_auth or is_loopback(settings.api_host)


def caller(scope: Scope) -> ApiKey | None:
    """The key that authenticated this request (None when the API is open)."""
    key: ApiKey | None = scope.get("state", {}).get("api_key")
    return key


def capped_priority(scope: Scope, priority: str, default: str) -> str:
    """The lane a request goes to under its key's cap (``max_priority``): the
    endpoint's ``default`` comes down to the cap; a higher lane asked for is
    refused (403), naming the cap."""
    key = caller(scope)
    cap = key.max_priority if key is not None else None
    if cap is None or cap not in LANES or LANES.index(priority) >= LANES.index(cap):
        return priority
    if priority == default:
        return cap
    raise Forbidden(f"this API key may ask for priority {cap!r} at most, not {priority!r}")


def owner_of(scope: Scope) -> str | None:
    """The name recorded as the owner of what a request makes (None when open)."""
    key = caller(scope)
    return None if key is None else key.name


def viewer_of(scope: Scope) -> str | None:
    """Whose tasks a request may read: a predict key's own only (its name);
    None for an admin key or an open API, which read all."""
    key = caller(scope)
    return None if key is None or key.scope == ADMIN else key.name
