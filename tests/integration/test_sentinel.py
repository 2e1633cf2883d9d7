"""The stack on Redis Sentinel (``sentinel://``): a primary, two replicas and
three Sentinels (Debian's redis-server and redis-sentinel) on loopback; a
worker and the API serve through the primary the Sentinels name; the primary
is SIGKILLed, the Sentinels promote a replica, and every process follows it
without a restart: the jobs accepted before the kill end once, and new
predictions are served. (The rehearsal measures it under load:
``turnout chaos --cluster``, scenario G.)"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import REPO, Cluster, poll_task
from turnout.benchmarks.chaos.cluster.sentinel import DEBIAN_SENTINEL, Node, SentinelGroup
from turnout.client import Client
from turnout.stack.redis_server import free_port

pytestmark = pytest.mark.integration

DEBIAN_REDIS = "/usr/bin/redis-server"
ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    for binary in (DEBIAN_REDIS, DEBIAN_SENTINEL):
        if not Path(binary).is_file() and not shutil.which(Path(binary).name):
            pytest.skip(f"{binary} is not installed: apt-get install redis-server redis-sentinel")
    group = SentinelGroup(tmp_path / "sentinel",
                          [Node("127.0.0.1", free_port(), free_port()) for _ in range(3)],
                          password="sentinel-test-password")
    (tmp_path / "sentinel").mkdir()
    try:
        yield group
    finally:
        group.stop()


def test_every_process_follows_a_failover(group: SentinelGroup, models_dir: Path,
                                          tmp_path: Path) -> None:
    settings = group.start(DEBIAN_REDIS)
    # Accepted means on a replica (TURNOUT_BROKER_REPLICAS): no failover loses it.
    cluster = Cluster(settings, models_dir, REPO / "tests" / "support" / "routes.yaml", tmp_path,
                      extra_env={"TURNOUT_BROKER_REPLICAS": "1"})
    try:
        worker = cluster.worker("cpu", "cpu-sentinel@test", "--concurrency", "1")
        _, url = cluster.api()
        first = httpx.post(f"{url}/v1/models/iris/predict", json={"inputs": [ROW], "wait": 20},
                           timeout=30)
        assert first.status_code == 200, first.text
        queued = [httpx.post(f"{url}/v1/models/iris/predict", json={"inputs": [ROW]},
                             timeout=10).json()["task_id"] for _ in range(20)]
        old = group.primary()
        group.server_at(old).proc.kill()
        t0 = time.monotonic()
        while True:
            try:
                if group.primary() != old:
                    break
            except RuntimeError:
                pass
            assert time.monotonic() - t0 < 30, "the Sentinels promoted no replica in 30 s"
            time.sleep(0.1)
        # The client retries 503s (no live worker yet, the broker moving).
        with Client(url, api_key="", retry_for_s=60) as client:
            after = client.predict("iris", [ROW], wait=30)
        assert after["predictions"] == ["setosa"]
        # Accepted, so on a replica, before the kill: each ends with its result.
        with httpx.Client(base_url=url, timeout=10) as http:
            for task_id in queued:
                view = poll_task(http, task_id, {"SUCCESS", "FAILURE", "REVOKED"}, timeout=60)
                assert view["status"] == "SUCCESS", view
        assert worker.proc.poll() is None, "the worker stopped instead of following the primary"
    finally:
        cluster.stop()
