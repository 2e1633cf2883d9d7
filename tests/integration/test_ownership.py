"""Deliveries owned by live workers, with real processes killed and frozen:
a dead worker's job is back and done within seconds, a frozen worker that
wakes writes no second result, and a job longer than the visibility timeout
runs once. The execution ledger (TURNOUT_LEDGER) counts every run."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_digits

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, Proc, alive, poll_task, wait_for
from turnout.core import delivery, redis_keys

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-owned.yaml"
ROWS = load_digits().data[:2].tolist()
LABELS = load_digits().target[:2].tolist()
DEAD_AFTER_S = 2.5


@dataclass
class Owned:
    cluster: Cluster
    http: httpx.Client

    def workers(self, *names: str) -> dict[str, Proc]:
        procs = {p.name: p for p in self.cluster.procs if p.proc.poll() is None}
        for name in names:
            if name not in procs:
                procs[name] = self.cluster.worker("gpu", name, "--device", "cpu")
        wait_for(lambda: {w["name"] for w in self.http.get("/v1/workers").json()["workers"]}
                 >= set(names), 20, "the API to see the workers")
        return procs

    def submit(self) -> str:
        r = self.http.post("/v1/models/slow-digits/predict", json={"inputs": ROWS})
        assert r.status_code == 202, r.text
        return str(r.json()["task_id"])

    def running(self, task_id: str) -> str:
        """The name of the worker running ``task_id``, from the heartbeats."""
        def find() -> str | None:
            for name in ("gpu-a@own", "gpu-b@own"):
                beat = self.cluster.heartbeat(name)
                if beat is not None and any(t.task_id == task_id for t in beat.current_tasks):
                    return name
            return None
        return str(wait_for(find, 30, f"a worker to run {task_id}"))

    def ledger(self, task_id: str) -> dict[str, Any]:
        entries = [json.loads(e) for e in self.cluster.client.lrange(delivery.LEDGER, 0, -1)]
        mine = [e for e in entries if e["task"] == task_id]
        return {
            "runs": [e["incarnation"] for e in mine if e["event"] == "start"],
            "stored": Counter(e["stored"] for e in mine if e["event"] == "result"),
        }


@pytest.fixture(scope="module")
def owned(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Owned]:
    tmp = tmp_path_factory.mktemp("owned")
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(
        server.settings, models_dir, ROUTES, tmp,
        extra_env={
            "TURNOUT_HEARTBEAT_S": "0.5",
            "TURNOUT_DEAD_AFTER_S": str(DEAD_AFTER_S),
            "TURNOUT_VISIBILITY_TIMEOUT_S": "1",
            "TURNOUT_LEDGER": "1",
        },
    )
    try:
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Owned(cluster, http)
    finally:
        cluster.stop()
        server.stop()


def test_a_whole_worker_killed_mid_job_its_job_is_back_and_done_within_seconds(owned: Owned) -> None:
    procs = owned.workers("gpu-a@own", "gpu-b@own")
    task_id = owned.submit()
    victim = owned.running(task_id)
    survivor = ({"gpu-a@own", "gpu-b@own"} - {victim}).pop()

    # Parent and pool child at once, as in an OOM kill or a lost machine;
    # nothing restarts it.
    killed_at = time.monotonic()
    os.killpg(procs[victim].proc.pid, signal.SIGKILL)
    procs[victim].proc.wait(10)
    done = poll_task(owned.http, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
    back_in = time.monotonic() - killed_at

    assert done["status"] == "SUCCESS", done
    assert done["predictions"] == LABELS
    assert done["worker"] == survivor
    # Declared dead after DEAD_AFTER_S of silence, then a 3 s job: well within 10 s.
    assert back_in < 10, back_in
    ledger = owned.ledger(task_id)
    assert len(ledger["runs"]) == 2 and ledger["runs"][0] != ledger["runs"][1]
    assert ledger["stored"] == {1: 1}
    assert owned.cluster.client.hlen("unacked") == 0
    assert delivery.stats(owned.cluster.client)["given_back_reaped"] >= 1


def test_a_frozen_worker_that_wakes_writes_no_second_result(owned: Owned) -> None:
    procs = owned.workers("gpu-a@own", "gpu-b@own")
    task_id = owned.submit()
    victim = owned.running(task_id)
    survivor = ({"gpu-a@own", "gpu-b@own"} - {victim}).pop()
    frozen = procs[victim].proc

    os.killpg(frozen.pid, signal.SIGSTOP)  # parent and child, mid-job
    try:
        done = poll_task(owned.http, task_id, {"SUCCESS", "FAILURE"}, timeout=30)
        assert done["status"] == "SUCCESS" and done["worker"] == survivor, done
        first = owned.cluster.client.get(redis_keys.result(task_id))
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)

    # Awake, it learns it was declared dead and stops; whatever its child
    # still writes is fenced off.
    wait_for(lambda: frozen.poll() is not None, 20, "the woken worker to stop itself")
    time.sleep(1)
    assert owned.cluster.client.get(redis_keys.result(task_id)) == first
    ledger = owned.ledger(task_id)
    assert ledger["stored"][1] == 1  # one result stored, and only one
    assert len(ledger["runs"]) == 2
    assert owned.http.get(f"/v1/tasks/{task_id}").json()["worker"] == survivor


def test_a_job_longer_than_the_visibility_timeout_runs_once(owned: Owned) -> None:
    procs = owned.workers("gpu-a@own", "gpu-b@own")
    # The job takes 3 s; kombu's visibility timeout is 1 s and its sweep runs
    # every second: a plain kombu worker would hand it to the idle one.
    task_id = owned.submit()
    runner = owned.running(task_id)
    done = poll_task(owned.http, task_id, {"SUCCESS", "FAILURE"}, timeout=30)

    assert done["status"] == "SUCCESS" and done["worker"] == runner
    ledger = owned.ledger(task_id)
    assert len(ledger["runs"]) == 1, ledger
    assert ledger["stored"] == {1: 1}
    assert int(owned.cluster.client.get(redis_keys.deliveries(task_id))) == 1
    assert all(alive(p.proc.pid) for p in procs.values())
    # Each start of a worker is an incarnation of its own, shown to operators.
    shown = {w["name"]: w["incarnation"] for w in owned.http.get("/v1/workers").json()["workers"]}
    assert all(shown[n].startswith(n + "#") for n in ("gpu-a@own", "gpu-b@own")), shown


class _Trap:
    """Unpickling this writes a file: proof that someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (Path.write_text, (Path(self.path), "unpickled"))  # type: ignore[return-value]


def test_a_pickled_task_message_is_refused_and_never_unpickled(owned: Owned, tmp_path: Path) -> None:
    """Messages are JSON only: a pickle body, claimed through the owned path
    like any other, is refused by the worker without being loaded."""
    import base64
    import pickle
    import uuid

    owned.workers("gpu-a@own", "gpu-b@own")
    trap = tmp_path / "trap"
    task_id = str(uuid.uuid4())
    body = pickle.dumps(((("slow-digits", [[task_id, ROWS, time.time()]]), {}, {}), _Trap(str(trap))))
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"id": task_id, "task": "turnout.predict", "lang": "py", "root_id": task_id},
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": "gpu"}, "priority": 0},
    }
    client = owned.cluster.client
    client.lpush("gpu", json.dumps(envelope))
    client.lpush(redis_keys.bell("gpu"), 1)

    # Taken off the queue, refused and acknowledged: nothing held, nothing run.
    wait_for(lambda: client.llen("gpu") == 0 and client.hlen("unacked") == 0, 30,
             "the pickled message to be taken and refused")
    time.sleep(1)
    assert not trap.exists()
    assert client.get(redis_keys.result(task_id)) is None
    assert owned.ledger(task_id)["runs"] == []
