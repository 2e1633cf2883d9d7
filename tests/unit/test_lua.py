"""The Lua scripts ship as files, each used, each compiled by a real Redis."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from turnout.core import lua
from turnout.core.settings import RedisSettings

REPO = Path(__file__).resolve().parents[2]


def test_every_script_named_in_the_code_ships_and_every_shipped_one_is_used() -> None:
    code = "".join(p.read_text() for folder in ("turnout", "router", "workers")
                   for p in (REPO / folder).rglob("*.py"))
    used = set(re.findall(r'lua\.source\("([a-z_]+)"\)', code))
    assert used == set(lua.names())


def test_every_script_compiles(redis_server: RedisSettings) -> None:
    client = redis.Redis.from_url(redis_server.url)
    for name in lua.names():
        sha = client.script_load(lua.source(name))
        assert client.script_exists(sha) == [True], name
