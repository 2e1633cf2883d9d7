"""The route table in force across processes: ``turnout reload`` (or SIGHUP
to ``turnout up``, or ``POST /v1/admin/reload``) validates the file and
publishes its text in Redis with a new generation; every API process and
every worker's pool children adopt a newer generation on their next look.

A bad file is refused before anything is published, with the error naming
its key, so the last good table stays in force everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
import yaml

from turnout.core import redis_keys
from turnout.core.errors import ConfigError
from turnout.core.routes.loading import compose, parse_routes
from turnout.core.routes.schema import RouteTable


def prepare(path: Path, models_dir: Path) -> tuple[str, RouteTable]:
    """The table in force (the file and the added models' routes) as text and
    table, validated; ``ConfigError`` naming the key if bad."""
    return compose(path, models_dir)


def queue_publish(pipe: Any, path: Path, text: str) -> None:
    """Queue, on a transaction ``pipe`` (sync or asyncio), the commands that
    make ``text`` the table in force with the next generation; the reply to
    the first is that generation."""
    pipe.hincrby(redis_keys.ROUTES, "generation", 1)
    pipe.hset(redis_keys.ROUTES, mapping={"text": text, "source": str(path)})


def publish(client: redis.Redis, path: Path, models_dir: Path) -> tuple[int, RouteTable]:
    """Validate the file at ``path`` (with the models added under
    ``models_dir``) and make it the table in force. Raises ``ConfigError``
    (naming the key) and publishes nothing if it is bad."""
    text, table = prepare(path, models_dir)
    pipe = client.pipeline(transaction=True)
    queue_publish(pipe, path, text)
    generation, _ = pipe.execute()
    return int(generation), table


def parse_published(doc: Mapping[Any, Any]) -> tuple[int, RouteTable]:
    """A published table, as HGETALL returns it."""
    fields = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in doc.items()
    }
    generation = int(fields.get("generation", 0))
    try:
        data = yaml.safe_load(fields.get("text", ""))
    except yaml.YAMLError as exc:
        raise ConfigError(f"the published route table is not valid YAML: {exc}") from None
    source = fields.get("source", "<published>")
    return generation, parse_routes(data, source=source, text=fields.get("text"))
