"""Who may call what, and how keys are checked: pure decisions, with a plain
fake of the one Redis call the key ring makes."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from turnout.core import access
from turnout.core.errors import ConfigError, Forbidden, RateLimited, Unauthorized
from turnout.core.settings import Settings
from turnout.router.access import KeyRing, required_scope


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
        ("POST", "/v1/models/iris/predict", "predict"),
        ("POST", "/v1/models/iris/versions/2/predict", "predict"),
        ("POST", "/v1/models/iris/batch", "predict"),
        ("GET", "/v1/tasks/abc", "predict"),
        ("DELETE", "/v1/tasks/abc", "predict"),
        ("GET", "/v1/models/iris", "predict"),
        ("GET", "/v1/workers", "predict"),
        ("GET", "/v1/no/such/path", "predict"),
        ("PUT", "/v1/models/iris/default", "admin"),
        ("POST", "/v1/models/iris/train", "admin"),
        ("GET", "/v1/training/job", "admin"),
        ("DELETE", "/v1/training/job", "admin"),
        ("POST", "/v1/admin/reload", "admin"),
        ("GET", "/v1/admin/keys", "admin"),
    ],
)
def test_required_scope(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope


def test_metrics_behind_its_own_setting() -> None:
    assert required_scope("GET", "/metrics", metrics_auth=True) == "predict"


class FakePipeline:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis = redis

    def hgetall(self, _key: str) -> None:
        pass

    def exists(self, _key: str) -> None:
        pass

    async def execute(self) -> list[object]:
        self.redis.reads += 1
        return [dict(self.redis.hash), int(self.redis.closed)]


class FakeRedis:
    """The API keys' hash and the closed flag, as the key ring reads them."""

    def __init__(self) -> None:
        self.hash: dict[bytes, bytes] = {}
        self.closed = False
        self.reads = 0

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def add(self, name: str, scope: str, rate: float | None = None) -> str:
        key, token = access.new_key(name, scope, rate)
        self.hash[name.encode()] = orjson.dumps(key.__dict__)
        self.closed = True
        return token


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_open_only_while_no_key_exists_and_only_when_told_so() -> None:
    redis = FakeRedis()
    ring = KeyRing(redis, open_when_empty=True)  # type: ignore[arg-type]
    assert run(ring.authenticate(None, "predict", "x")) is None
    closed = KeyRing(redis, open_when_empty=False)  # type: ignore[arg-type]
    with pytest.raises(Unauthorized):
        run(closed.authenticate(None, "predict", "x"))


def test_once_keys_were_made_no_keys_left_is_closed() -> None:
    redis = FakeRedis()
    ring = KeyRing(redis, open_when_empty=True)  # type: ignore[arg-type]
    token = redis.add("alice", "predict")
    redis.hash.clear()  # revoked, the last one
    ring.update({}, True)
    with pytest.raises(Unauthorized, match="needs an API key"):
        run(ring.authenticate(None, "predict", "x"))
    with pytest.raises(Unauthorized, match="not valid"):
        run(ring.authenticate(f"Bearer {token}", "predict", "x"))
    redis.closed = False  # `turnout keys reopen`
    ring.update({}, False)
    assert run(ring.authenticate(None, "predict", "x")) is None


def test_scopes_wrong_tokens_and_keys_made_since_the_last_read() -> None:
    redis = FakeRedis()
    ring = KeyRing(redis, open_when_empty=True)  # type: ignore[arg-type]
    ring.update({}, False)
    token = redis.add("alice", "predict")  # after the ring's last read
    key = run(ring.authenticate(f"Bearer {token}", "predict", "x"))
    assert key.name == "alice"
    with pytest.raises(Forbidden, match="scope 'predict'; x needs scope 'admin'"):
        run(ring.authenticate(f"Bearer {token}", "admin", "x"))
    with pytest.raises(Unauthorized, match="not valid"):
        run(ring.authenticate("Bearer tnt_wrong", "predict", "x"))
    with pytest.raises(Unauthorized, match="Bearer <token>"):
        run(ring.authenticate(f"Basic {token}", "predict", "x"))
    with pytest.raises(Unauthorized, match="needs an API key"):
        run(ring.authenticate(None, "predict", "x"))
    admin = redis.add("root", "admin")
    assert run(ring.authenticate(f"bearer {admin}", "predict", "x")).scope == "admin"


def test_a_rate_limited_key_gets_429_with_retry_after() -> None:
    redis = FakeRedis()
    token = redis.add("slow", "predict", rate=2)
    ring = KeyRing(redis, open_when_empty=False)  # type: ignore[arg-type]
    for _ in range(2):
        run(ring.authenticate(f"Bearer {token}", "predict", "x"))
    with pytest.raises(RateLimited) as limited:
        run(ring.authenticate(f"Bearer {token}", "predict", "x"))
    assert limited.value.retry_after_s >= 1 and limited.value.status_code == 429


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_key(host: str) -> None:
    access.check_bind(Settings(api_host=host), have_keys=False)


def test_a_public_address_needs_a_key_or_insecure_on_purpose() -> None:
    with pytest.raises(ConfigError, match="turnout keys create"):
        access.check_bind(Settings(api_host="0.0.0.0"), have_keys=False)
    access.check_bind(Settings(api_host="0.0.0.0"), have_keys=True)
    access.check_bind(Settings(api_host="0.0.0.0", insecure_no_auth=True), have_keys=False)


def test_key_names_and_scopes_are_checked_and_tokens_never_stored() -> None:
    with pytest.raises(ConfigError, match="key name"):
        access.new_key("no/slash", "predict")
    with pytest.raises(ConfigError, match="scope 'root'"):
        access.new_key("ok", "root")
    key, token = access.new_key("ok", "admin")
    assert token.startswith("tnt_") and len(token) > 40
    stored = access.store_args(key)[2]
    assert token.encode() not in stored and access.hash_token(token).encode() in stored
    assert "hash" not in key.public()
