"""The Lua scripts that make each step of a delivery atomic in Redis
(``turnout/core/lua/delivery_*.lua``, each file saying its KEYS and ARGV)."""

from __future__ import annotations

import redis

from turnout.core import lua


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
