"""The running stack the integration tests talk to: a real Redis, a CPU worker,
a GPU worker on the CPU, and the API, each a real process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.procs import REPO, Cluster
from turnout.core.settings import RedisSettings

ROUTES = REPO / "tests" / "support" / "routes.yaml"


@dataclass
class Stack:
    cluster: Cluster
    url: str
    http: httpx.Client
    models_dir: Path


@pytest.fixture(scope="session")
def stack(redis_server: RedisSettings, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cluster = Cluster(redis_server, models_dir, ROUTES, tmp_path_factory.mktemp("stack"))
    try:
        cluster.worker("cpu", "cpu@test", "--concurrency", "2")
        cluster.worker("gpu", "gpu-cpu@test", "--device", "cpu")
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            # The API refreshes its view of live workers in the background.
            for _ in range(100):
                if len(http.get("/v1/workers").json()["workers"]) >= 2:
                    break
            yield Stack(cluster, url, http, models_dir)
    finally:
        cluster.stop()


@pytest.fixture
def http(stack: Stack) -> httpx.Client:
    return stack.http
