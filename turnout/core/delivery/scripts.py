"""The Lua scripts that make each step of a delivery atomic in Redis
(``turnout/core/lua/delivery_*.lua``, each file saying its KEYS and ARGV)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from turnout.core import lua

# One script call: the script, its KEYS, its ARGV.
Call = tuple[Script, Sequence[Any], Sequence[Any]]


class Scripts:
    """The Lua scripts, registered on one client (EVALSHA after the first call)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.claim = client.register_script(lua.source("delivery_claim"))
        self.join = client.register_script(lua.source("delivery_join"))
        self.append = client.register_script(lua.source("delivery_append"))
        self.ack = client.register_script(lua.source("delivery_ack"))
        self.beat = client.register_script(lua.source("delivery_beat"))
        self.start = client.register_script(lua.source("delivery_start"))
        self.store = client.register_script(lua.source("delivery_store"))
        self.hop = client.register_script(lua.source("flow_hop"))

    def pipelined(self, calls: Sequence[Call]) -> list[Any]:
        """Several script calls in one round trip; their answers, in order.

        redis-py's own way (a Script called on a pipeline) asks SCRIPT EXISTS
        before every execute: a second round trip each time. Here each call
        is a plain EVALSHA; only when Redis has lost its scripts (a restart)
        are they loaded and the calls sent again. (A call that had run before
        the one that failed then runs twice: each script here is safe to
        repeat, which the ack and store scripts are by design, and a start
        counts one delivery more.)"""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for script, keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            try:
                return list(pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                for script, _, _ in calls:
                    script.sha = self.client.script_load(script.script)
        raise AssertionError("unreachable")
