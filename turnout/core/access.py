"""API keys: bearer tokens stored only as hashes, in Redis, so that every API
process sees the same keys.

A token is 256 random bits, shown once when it is made; Redis keeps its
SHA-256 (a slow hash buys nothing for a random token of that size). Keys have
a scope: ``predict`` (predict, submit batches, read their own tasks and the
catalogue) or ``admin`` (all of that, plus train, promote, reload and manage
keys). Tokens never appear in logs, messages or command lines.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis

from turnout.core import redis_keys
from turnout.core.broker import connect, why
from turnout.core.errors import ConfigError, KeyExists
from turnout.core.redis_keys import LANES
from turnout.core.settings import Settings

PREDICT = "predict"
ADMIN = "admin"
SCOPES = (PREDICT, ADMIN)
TOKEN_PREFIX = "tnt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    scope: str
    hash: str
    created_at: float
    # Requests per second this key may make, per API process; None: no limit.
    rate_per_s: float | None = None
    # The highest priority lane this key's requests may ask for; None: any.
    max_priority: str | None = None

    def allows(self, scope: str) -> bool:
        return self.scope == ADMIN or scope == self.scope

    def public(self) -> dict[str, Any]:
        """What may be shown of a key: never its hash."""
        return {"name": self.name, "scope": self.scope, "created_at": self.created_at,
                "rate_per_s": self.rate_per_s, "max_priority": self.max_priority}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def find(known: list[ApiKey], token: str) -> ApiKey | None:
    """The key ``token`` belongs to. Its hash is compared with every key's
    in constant time, with no early exit, so that how long the look-up takes
    says nothing about any stored hash (there are tens of keys, not millions)."""
    digest = hash_token(token).encode()
    found = None
    for key in known:
        if hmac.compare_digest(key.hash.encode(), digest):
            found = key
    return found


def parse_key(raw: bytes | str) -> ApiKey:
    doc = orjson.loads(raw)
    return ApiKey(doc["name"], doc["scope"], doc["hash"], float(doc["created_at"]),
                  doc.get("rate_per_s"), doc.get("max_priority"))


def parse_keys(raw: dict[Any, Any]) -> list[ApiKey]:
    """``turnout:apikeys`` (name -> JSON) as keys, by name."""
    return sorted((parse_key(value) for value in raw.values()), key=lambda k: k.name)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"key name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ConfigError(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return scope


def new_key(
    name: str, scope: str, rate_per_s: float | None = None, max_priority: str | None = None,
) -> tuple[ApiKey, str]:
    """A key and its token, checked, not stored yet (``store_args``)."""
    check_name(name)
    check_scope(scope)
    if rate_per_s is not None and rate_per_s <= 0:
        raise ConfigError(f"rate {rate_per_s:g}: must be more than 0 requests a second")
    if max_priority is not None and max_priority not in LANES:
        raise ConfigError(f"max priority {max_priority!r}: expected one of {', '.join(LANES)}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return ApiKey(name, scope, hash_token(token), time.time(), rate_per_s, max_priority), token


def store_args(key: ApiKey) -> tuple[str, str, bytes]:
    """HSETNX's arguments: two operators making one name at once get one key."""
    return redis_keys.API_KEYS, key.name, orjson.dumps(asdict(key))


def taken(name: str) -> KeyExists:
    return KeyExists(f"a key named {name!r} exists; revoke it first or choose another name")


def create(
    client: redis.Redis, name: str, scope: str, rate_per_s: float | None = None,
    max_priority: str | None = None,
) -> tuple[ApiKey, str]:
    """Make a key; returns it and its token, which is never stored or shown again."""
    key, token = new_key(name, scope, rate_per_s, max_priority)
    if not client.hsetnx(*store_args(key)):
        raise taken(name)
    client.set(redis_keys.API_KEYS_CLOSED, "1")
    return key, token


def list_keys(client: redis.Redis) -> list[ApiKey]:
    return parse_keys(client.hgetall(redis_keys.API_KEYS))


def revoke(client: redis.Redis, name: str) -> bool:
    return bool(client.hdel(redis_keys.API_KEYS, name))


def closed(client: redis.Redis) -> bool:
    """Whether keys were ever made here: the API then needs one even when none
    is left (revoking the last key does not open it)."""
    return bool(client.exists(redis_keys.API_KEYS_CLOSED))


def reopen(client: redis.Redis) -> None:
    """With no key left, let the API serve open on loopback again, on purpose."""
    if client.hlen(redis_keys.API_KEYS):
        raise ConfigError("API keys exist: the API needs them; revoke them first to reopen it")
    client.delete(redis_keys.API_KEYS_CLOSED)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, have_keys: bool) -> None:
    """Safe by default: an API on any address but loopback needs keys, unless
    the operator says ``--insecure-no-auth`` on purpose."""
    if have_keys or settings.insecure_no_auth or is_loopback(settings.api_host):
        return
    raise ConfigError(
        f"refusing to serve the API on {settings.api_host} with no API keys: anyone who can "
        "reach it could use it. Create a key first (`turnout keys create NAME --scope admin`), "
        "or pass --insecure-no-auth (TURNOUT_INSECURE_NO_AUTH=1) to serve it open on purpose"
    )


def check_bind_against(settings: Settings) -> None:
    """``check_bind`` with the keys read from the broker (for the commands
    that start an API)."""
    if settings.insecure_no_auth or is_loopback(settings.api_host):
        return
    client = connect(settings.redis(), socket_timeout=5)
    try:
        have = bool(client.hlen(redis_keys.API_KEYS))
    except redis.RedisError as exc:
        raise ConfigError(
            f"cannot tell whether API keys exist: {why(exc)}"
        ) from None
    finally:
        client.close()
    check_bind(settings, have)
