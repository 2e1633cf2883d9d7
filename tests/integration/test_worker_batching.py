"""Worker-side batching: a worker running one task takes the other queued
tasks of the same model and version into its forward pass, whichever API
process sent them; each keeps its own id, result and failure, and a pool
child killed while it holds them loses none and answers none twice."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sklearn.datasets import load_digits

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, descendants, poll_task, wait_for
from turnout.core import delivery, redis_keys

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-riders.yaml"
WORKER = "gpu-riders@test"
DIGITS = load_digits()


@dataclass
class Riders:
    cluster: Cluster
    apis: list[httpx.Client]

    def ledger(self, since: int = 0) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in self.cluster.client.lrange(delivery.LEDGER, since, -1)]

    def block(self) -> str:
        """A task that keeps the worker's one child busy for its pass."""
        r = self.apis[0].post("/v1/models/slow-batched/predict",
                              json={"inputs": DIGITS.data[:1].tolist()})
        assert r.status_code == 202, r.text
        task_id = str(r.json()["task_id"])
        poll_task(self.apis[0], task_id, {"STARTED"}, timeout=30)
        return task_id


@pytest.fixture(scope="module")
def riders(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Riders]:
    tmp = tmp_path_factory.mktemp("riders")
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(server.settings, models_dir, ROUTES, tmp, extra_env={"TURNOUT_LEDGER": "1"})
    try:
        cluster.worker("gpu", WORKER, "--device", "cpu")
        urls = [cluster.api()[1] for _ in range(2)]
        clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
        for client in clients:
            wait_for(lambda c=client: c.get("/v1/workers").json()["workers"], 20, "the API to see the worker")
        yield Riders(cluster, clients)
        for client in clients:
            client.close()
    finally:
        cluster.stop()
        server.stop()


def _send_spread(riders: Riders, spans: list[tuple[int, int]], wait: float = 60) -> list[httpx.Response]:
    """Each request to the API processes in turn, all at once."""
    def post(i: int) -> httpx.Response:
        a, b = spans[i]
        api = riders.apis[i % len(riders.apis)]
        return api.post("/v1/models/slow-batched/predict", json={"inputs": DIGITS.data[a:b].tolist(), "wait": wait})

    with ThreadPoolExecutor(len(spans)) as pool:
        return list(pool.map(post, range(len(spans))))


def _tasks_of(riders: Riders, task_ids: list[str]) -> set[str]:
    return {orjson.loads(riders.cluster.client.get(redis_keys.task(t)))["batch"] for t in task_ids}


def test_tasks_from_two_api_processes_run_in_one_forward_pass(riders: Riders) -> None:
    riders.block()
    spans = [(10 + 2 * i, 12 + 2 * i + i % 2) for i in range(6)]
    responses = _send_spread(riders, spans)
    views = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for (a, b), view in zip(spans, views, strict=True):
        assert view["status"] == "SUCCESS", view
        assert view["predictions"] == DIGITS.target[a:b].tolist()  # its own rows, in order
    # Two API processes, so at least two tasks; the worker ran all six requests
    # in one pass once the blocker was done.
    tasks = _tasks_of(riders, [v["task_id"] for v in views])
    assert len(tasks) >= 2
    assert {v["batch_size"] for v in views} == {6}
    starts = [e for e in riders.ledger() if e["event"] == "start" and e["task"] in tasks]
    assert Counter(e["task"] for e in starts) == dict.fromkeys(tasks, 1)  # each started once
    assert sum(1 for e in starts if not e.get("joined")) == 1  # one leader, the rest taken along
    assert len({e["t"] for e in starts}) == 1
    results = [e for e in riders.ledger() if e["event"] == "result" and e["task"] in tasks]
    assert sorted(e["task"] for e in results if e["stored"] == 1) == sorted(tasks)
    # Nothing is left held, joined or unacked.
    client = riders.cluster.client
    assert not client.hlen(delivery.UNACKED)
    assert not any(client.scan_iter(match=redis_keys.joined("*")))


def test_a_bad_request_taken_along_fails_alone(riders: Riders) -> None:
    riders.block()
    rows = DIGITS.data[20:24].tolist()
    rows[1] = [777.0] + rows[1][1:]

    def post(i: int) -> dict[str, Any]:
        r = riders.apis[i % 2].post("/v1/models/slow-batched/predict", json={"inputs": [rows[i]], "wait": 60})
        return dict(r.json())

    with ThreadPoolExecutor(4) as pool:
        views = list(pool.map(post, range(4)))
    assert views[1]["status"] == "FAILURE" and "777" in views[1]["error"], views[1]
    for i in (0, 2, 3):
        assert views[i]["status"] == "SUCCESS", views[i]
        assert views[i]["predictions"] == [int(DIGITS.target[20 + i])]
    assert len(_tasks_of(riders, [v["task_id"] for v in views])) >= 2


def test_pool_child_killed_holding_tasks_taken_along_answers_each_once(riders: Riders) -> None:
    client = riders.cluster.client
    since = client.llen(delivery.LEDGER)
    before = delivery.stats(client)
    blocker = riders.block()
    spans = [(40 + i, 41 + i) for i in range(4)]
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(_send_spread, riders, spans, 60)
        # Wait for the pass that took tasks along, then kill the child running it.
        wait_for(lambda: any(e.get("joined") for e in riders.ledger(since)), 30, "a pass with tasks taken along")
        main = riders.cluster.heartbeat(WORKER)
        assert main is not None
        children = descendants(main.pid)
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        killed_at = time.time()
        responses = sent.result(timeout=120)
    views = [r.json() for r in responses]
    for (a, _b), view in zip(spans, views, strict=True):
        assert view.get("status") == "SUCCESS", view
        assert view["predictions"] == [int(DIGITS.target[a])]
    tasks = _tasks_of(riders, [v["task_id"] for v in views])
    killed = [e for e in riders.ledger() if e["event"] == "start" and e["task"] in tasks and e.get("joined")]
    assert killed, "the pass that was killed held tasks taken along"
    results = [e for e in riders.ledger() if e["event"] == "result" and e["task"] in tasks | {blocker}]
    stored = Counter(e["task"] for e in results if e["stored"] == 1)
    assert stored == dict.fromkeys(tasks | {blocker}, 1)  # every task answered exactly once
    # The ones taken along ran again, alone (a redelivered task takes none
    # along), given back by the worker as soon as it settled the task they
    # rode with (requeued), not found later by its sweep's audit (forgotten).
    taken_along = {e["task"] for e in killed}
    for task in taken_along:
        assert int(client.get(redis_keys.deliveries(task)) or 0) == 2
    stats = delivery.stats(client)
    assert stats.get("given_back_requeued", 0) - before.get("given_back_requeued", 0) >= len(taken_along)
    assert stats.get("given_back_forgotten", 0) == before.get("given_back_forgotten", 0)
    again = [e["t"] for e in riders.ledger(since) if e["event"] == "result" and e["task"] in tasks]
    assert max(again) - killed_at < 30
    assert not client.hlen(delivery.UNACKED)


def test_batch_chunks_in_the_low_lane_are_taken_along(riders: Riders) -> None:
    client = riders.cluster.client
    since = client.llen(delivery.LEDGER)
    riders.block()
    r = riders.apis[1].post("/v1/models/slow-batched/batch",
                            json={"inputs": DIGITS.data[:16].tolist(), "chunk_rows": 2})
    assert r.status_code == 202, r.text
    view = wait_for(lambda: (v := riders.apis[1].get(r.json()["status_url"]).json())["status"] == "SUCCESS" and v,
                    60, "the batch job")
    assert view["rows_done"] == 16 and view["predictions"] == DIGITS.target[:16].tolist()
    chunk_ids = {c[0] for c in orjson.loads(client.get(redis_keys.batch(r.json()["batch_id"])))["chunks"]}
    starts = [e for e in riders.ledger(since) if e["event"] == "start" and e["task"] in chunk_ids]
    assert Counter(e["task"] for e in starts) == dict.fromkeys(chunk_ids, 1)
    # Eight chunks, queued behind the blocker: one pass ran them all.
    assert len({e["t"] for e in starts}) == 1


def test_tasks_taken_along_send_their_task_events_while_monitored(riders: Riders) -> None:
    import base64
    import time

    client = riders.cluster.client
    client.set(redis_keys.MONITORING, "test", ex=60)
    time.sleep(5.5)  # a pool child looks at whether it is monitored every 5 s
    pubsub = client.pubsub()
    pubsub.psubscribe("*celeryev*")
    try:
        riders.block()
        views = [r.json() for r in _send_spread(riders, [(50 + i, 51 + i) for i in range(4)])]
        assert all(v["status"] == "SUCCESS" for v in views), views
        tasks = _tasks_of(riders, [v["task_id"] for v in views])
        succeeded: set[str] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(succeeded & tasks) < len(tasks) - 1:
            message = pubsub.get_message(timeout=0.5)
            if message is None or message["type"] != "pmessage":
                continue
            event = orjson.loads(base64.b64decode(orjson.loads(message["data"])["body"]))
            if event.get("type") == "task-succeeded":
                succeeded.add(event["uuid"])
        # The tasks taken along are seen to end (the leader's own events are
        # Celery's, sent once Flower turns the worker's events on).
        joined = {e["task"] for e in riders.ledger() if e.get("joined") and e["task"] in tasks}
        assert joined and joined <= succeeded, (joined, succeeded)
    finally:
        pubsub.close()
        client.delete(redis_keys.MONITORING)
