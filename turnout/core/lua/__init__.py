"""The Redis Lua scripts, one ``.lua`` file each beside this module (as
dramatiq's Redis broker keeps its own), read once per process.

``source(name)`` is the text of ``<name>.lua``; callers register it on their
client (``client.register_script(lua.source("delivery_claim"))``), which
sends it once and then calls it by its SHA.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def source(name: str) -> str:
    return files(__package__).joinpath(f"{name}.lua").read_text()


def names() -> list[str]:
    """Every script shipped, by name."""
    return sorted(p.name.removesuffix(".lua") for p in files(__package__).iterdir()
                  if p.name.endswith(".lua"))
