"""A job whose worker dies is delivered again and completes; one that kills its
worker every time is failed after a bounded number of tries."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_digits

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, alive, descendants, poll_task, wait_for
from turnout.core import redis_keys

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-loss.yaml"
WORKER = "gpu-loss@test"
ROWS = load_digits().data[:4].tolist()
LABELS = load_digits().target[:4].tolist()


@dataclass
class LossStack:
    cluster: Cluster
    http: httpx.Client

    def start_worker(self) -> int:
        self.cluster.worker("gpu", WORKER, "--device", "cpu")
        return self.ensure_worker()

    def ensure_worker(self) -> int:
        """The live worker's pid, once the API's routing sees it too."""
        heartbeat = self.cluster.heartbeat(WORKER)
        if heartbeat is None:
            return self.start_worker()
        pid = heartbeat.pid
        # /v1/workers refreshes the API's view, which routing reads.
        wait_for(lambda: any(w["pid"] == pid for w in self.http.get("/v1/workers").json()["workers"]), 10, "the API to see the worker")
        return int(pid)

    def submit(self) -> str:
        r = self.http.post("/v1/models/slow-digits/predict", json={"inputs": ROWS})
        assert r.status_code == 202, r.text
        return str(r.json()["task_id"])

    def deliveries(self, task_id: str) -> int:
        return int(self.cluster.client.get(redis_keys.deliveries(task_id)) or 0)


@pytest.fixture(scope="module")
def loss(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LossStack]:
    # A Redis of its own: these tests kill workers and must not disturb others.
    tmp = tmp_path_factory.mktemp("loss")
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(
        server.settings, models_dir, ROUTES, tmp,
        extra_env={
            "TURNOUT_MAX_QUEUE_WAIT_S": "2",
            "TURNOUT_MAX_DELIVERIES": "2",
            "TURNOUT_TEST_LOAD_LOG": str(tmp / "loads.log"),
        },
    )
    try:
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            yield LossStack(cluster, http)
    finally:
        cluster.stop()
        server.stop()


def _only_child(pid: int) -> int:
    children = wait_for(lambda: descendants(pid), 30, f"the pool child of {pid}")
    assert len(children) == 1, children  # concurrency 1: one pool child
    return int(children[0])


def test_a_worker_is_announced_only_once_its_models_are_loaded(loss: LossStack) -> None:
    proc = loss.cluster.spawn(WORKER, "worker", "gpu", "--name", WORKER, "--device", "cpu")
    # The model takes 1.5 s more to load than usual (load_sleep_s).
    wait_for(lambda: loss.cluster.heartbeat(WORKER), 90, "the first heartbeat", proc.proc, proc.log)
    first_seen = time.time()
    loads = (loss.cluster.tmp / "loads.log").read_text().split()
    assert len(loads) == 1
    assert float(loads[0]) <= first_seen


def test_pool_child_killed_mid_task_the_task_still_completes(loss: LossStack) -> None:
    main_pid = loss.ensure_worker()
    child = _only_child(main_pid)
    task_id = loss.submit()
    poll_task(loss.http, task_id, {"STARTED"}, timeout=30)

    os.kill(child, signal.SIGKILL)

    done = poll_task(loss.http, task_id, {"SUCCESS", "FAILURE"}, timeout=90)
    assert done["status"] == "SUCCESS", done
    assert done["predictions"] == LABELS
    assert done["worker"] == WORKER
    assert loss.deliveries(task_id) == 2  # run once, killed, run again
    assert alive(main_pid) and _only_child(main_pid) != child  # the pool replaced it


def test_whole_worker_killed_mid_task_completes_once_the_worker_is_back(loss: LossStack) -> None:
    main_pid = loss.ensure_worker()
    task_id = loss.submit()
    poll_task(loss.http, task_id, {"STARTED"}, timeout=30)

    # Parent and pool child die at once, as in an OOM kill or a lost machine.
    worker = next(p for p in loss.cluster.procs if p.name == WORKER and p.proc.pid == main_pid)
    os.killpg(main_pid, signal.SIGKILL)
    worker.proc.wait(10)
    assert loss.http.get(f"/v1/tasks/{task_id}").json()["status"] == "STARTED"
    # The message is held, unacknowledged, for whoever comes back.
    assert loss.cluster.client.hlen("unacked") == 1

    loss.start_worker()

    done = poll_task(loss.http, task_id, {"SUCCESS", "FAILURE"}, timeout=90)
    assert done["status"] == "SUCCESS", done
    assert done["predictions"] == LABELS
    assert loss.deliveries(task_id) == 2
    assert loss.cluster.client.hlen("unacked") == 0


def test_a_job_that_kills_its_worker_every_time_fails_after_bounded_tries(loss: LossStack) -> None:
    main_pid = loss.ensure_worker()
    task_id = loss.submit()
    for attempt in (1, 2):
        wait_for(lambda n=attempt: loss.deliveries(task_id) == n, 60, f"delivery {attempt}")
        poll_task(loss.http, task_id, {"STARTED"}, timeout=30)
        os.kill(_only_child(main_pid), signal.SIGKILL)

    done = poll_task(loss.http, task_id, {"SUCCESS", "FAILURE"}, timeout=90)

    assert done["status"] == "FAILURE"
    assert done["error"].startswith("TooManyDeliveries: model 'slow-digits'")
    assert "died each time" in done["error"]


def test_a_queued_task_can_be_revoked_and_never_runs(loss: LossStack) -> None:
    loss.ensure_worker()
    running = loss.submit()
    poll_task(loss.http, running, {"STARTED"}, timeout=30)
    queued = loss.submit()  # waits: the GPU worker runs one job at a time

    r = loss.http.delete(f"/v1/tasks/{queued}")

    assert r.status_code == 202, r.text
    assert r.json() == {"task_id": queued, "status": "REVOKED"}
    assert loss.http.get(f"/v1/tasks/{queued}").json()["status"] == "REVOKED"
    assert poll_task(loss.http, running, {"SUCCESS"})["status"] == "SUCCESS"
    # The worker took the revoked job off the queue and dropped it unrun.
    wait_for(lambda: loss.deliveries(queued) == 1 and loss.cluster.client.llen("gpu") == 0, 30, "the revoked job to be consumed")
    wait_for(lambda: loss.cluster.client.hlen("unacked") == 0, 30, "the revoked job to be acknowledged")
    meta = json.loads(loss.cluster.client.get(redis_keys.result(queued)))
    assert meta["status"] == "REVOKED"
    assert loss.http.get(f"/v1/tasks/{queued}").json()["status"] == "REVOKED"
