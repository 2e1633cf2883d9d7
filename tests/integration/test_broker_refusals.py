"""A broker that answers but refuses every write for longer than a worker's
death sentence (Redis's own refusal: ``min-replicas-to-write`` with no
replica, as it refuses when its disk is full): submits hear a 503 that says
why, no worker is declared dead or stops, and what was queued before runs
once the broker writes again. (The cluster rehearsal does the same with a
full disk and a full memory: ``turnout chaos --cluster``, scenarios E, F.)"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.support.procs import poll_task, wait_for

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]
WORKERS = ("cpu@test", "gpu-cpu@test")


def test_a_broker_that_refuses_writes_is_waited_out(stack: Stack) -> None:
    redis_client = stack.cluster.client
    before = {}
    for name in WORKERS:
        beat = stack.cluster.heartbeat(name)
        assert beat is not None
        before[name] = beat.incarnation
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        refused = stack.http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
        assert refused.status_code == 503, refused.text
        assert "too few replicas in sync" in refused.json()["detail"]
        assert "turnout:task" not in refused.json()["detail"]
        # Longer than TURNOUT_DEAD_AFTER_S (5 s): every beat is refused meanwhile.
        time.sleep(6.5)
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    done = stack.http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 30})
    assert done.status_code == 200, done.text
    # The same incarnations, beating again: none was declared dead, none stopped.
    # (Their announcements lapsed during the refusal: until each beats again,
    # the API may find no live worker for a route and answer 503.)
    for name in WORKERS:
        beat = wait_for(lambda n=name: stack.cluster.heartbeat(n), 15, f"{name}'s heartbeat")
        assert beat.incarnation == before[name], name
    time.sleep(1.0)  # the API's view of the workers refreshes
    # (iris, on the CPU queue: the GPU queue's drain rate is test_deadlines' to learn)
    queued = stack.http.post("/v1/models/iris/predict", json={"inputs": [ROW]})
    assert queued.status_code == 202, queued.text
    poll_task(stack.http, queued.json()["task_id"], {"SUCCESS"}, timeout=30)


def test_accepted_can_mean_on_a_replica(stack: Stack) -> None:
    """TURNOUT_BROKER_REPLICAS=1 against a Redis with no replica: the job is
    queued but not confirmed, so 503 NotReplicated; the retry with the same
    Idempotency-Key gets that very task, done, and no second one."""
    proc, url = stack.cluster.api(env={"TURNOUT_BROKER_REPLICAS": "1",
                                       "TURNOUT_BROKER_REPLICA_TIMEOUT_MS": "100"})
    try:
        headers = {"Idempotency-Key": "replica-test-1"}
        first = httpx.post(f"{url}/v1/models/iris/predict", json={"inputs": [ROW]},
                           headers=headers, timeout=30)
        assert first.status_code == 503, first.text
        assert first.headers["X-Turnout-Error"] == "NotReplicated"
        assert "0 of the 1 replica(s)" in first.json()["detail"]
        again = httpx.post(f"{url}/v1/models/iris/predict", json={"inputs": [ROW], "wait": 20},
                           headers=headers, timeout=30)
        assert again.status_code == 200, again.text
        assert again.json()["predictions"] == ["setosa"]
        third = httpx.post(f"{url}/v1/models/iris/predict", json={"inputs": [ROW]},
                           headers=headers, timeout=30)
        assert third.json()["task_id"] == again.json()["task_id"]
    finally:
        proc.stop()
