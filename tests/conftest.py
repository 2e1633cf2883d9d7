"""Session fixtures: the shipped models, built once, and a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from turnout.ml.build import build

    folder = tmp_path_factory.mktemp("models")
    for name in ("iris", "iris-tree", "iris-knn", "digits-cnn", "minilm", "ticket-head"):
        build(folder, name)
    return folder


def start_redis(folder: Path) -> EmbeddedRedis:
    server = EmbeddedRedis(folder)
    server.start(log=(folder.parent / f"{folder.name}.log").open("ab"))
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSettings]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    assert server.settings is not None
    yield server.settings
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisSettings) -> Iterator[redis.Redis]:
    """A client on a database of its own, flushed before and after the test."""
    settings = RedisSettings(redis_server.host, redis_server.port, db=9, password=redis_server.password)
    client = redis.Redis.from_url(settings.url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
