"""Deadlines (`timeout_s`): a request that cannot start in time is dropped
without running, on Redis's clock; its waiter hears 504 DeadlineExceeded at
its deadline, not when the queue gets to it; a micro-batch drops its expired
members and runs the rest."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

ROW = [0.0] * 64


def _task_of(detail: str) -> str:
    found = re.search(r"task ([0-9a-f-]{36})", detail)
    assert found, detail
    return found.group(1)


def _ended(http: httpx.Client, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: (v := http.get(f"/v1/tasks/{task_id}").json())["status"]
                    in ("SUCCESS", "FAILURE") and v, 30, f"task {task_id}")


def _dropped(http: httpx.Client, task_id: str) -> dict[str, Any]:
    """The view once a worker has dropped the request (before that, the
    router already says FAILURE for a queued request past its deadline)."""
    return wait_for(lambda: (v := http.get(f"/v1/tasks/{task_id}").json())["status"] == "FAILURE"
                    and "worker" in v and v, 30, f"task {task_id} to be dropped")


def test_an_expired_request_never_runs_and_its_waiter_hears_504_at_the_deadline(
    stack: Stack,
) -> None:
    http = stack.http
    # The one GPU worker is busy for 1.5 s.
    busy = http.post("/v1/models/slow-digits/predict", json={"inputs": [ROW]})
    assert busy.status_code == 202
    time.sleep(0.2)
    started = time.monotonic()
    r = http.post("/v1/models/slow-digits/predict",
                  json={"inputs": [ROW], "wait": 20, "timeout_s": 0.3})
    took = time.monotonic() - started
    assert r.status_code == 504, r.text
    assert r.headers["x-turnout-error"] == "DeadlineExceeded"
    assert "it had not started, and it will not run" in r.json()["detail"]
    # At its deadline, not when the busy job ended (1.3 s later).
    assert took < 1.0, took
    task_id = _task_of(r.json()["detail"])
    early = http.get(f"/v1/tasks/{task_id}").json()
    assert early["status"] == "FAILURE" and early["error"].startswith("DeadlineExceeded: ")
    view = _dropped(http, task_id)
    assert view["error"].startswith("DeadlineExceeded: ")
    timings = view["timings_ms"]
    assert "queued" in timings and "run" not in timings  # dropped at its start, unrun
    assert _ended(http, busy.json()["task_id"])["status"] == "SUCCESS"


def test_a_micro_batch_drops_its_expired_member_and_runs_the_others(stack: Stack) -> None:
    http = stack.http
    # A `hold` task in flight (1 s on the one GPU worker): the next `hold`
    # requests gather into one batch meanwhile.
    busy = http.post("/v1/models/hold/predict", json={"inputs": [ROW]})
    assert busy.status_code == 202
    time.sleep(0.2)
    answers: dict[str, httpx.Response] = {}

    def send(name: str, body: dict[str, Any]) -> None:
        with httpx.Client(base_url=stack.url, timeout=30) as client:
            answers[name] = client.post("/v1/models/hold/predict", json=body)

    # These two travel as one task, which starts only after the busy one.
    threads = [threading.Thread(target=send, args=("late", {"inputs": [ROW], "timeout_s": 0.2})),
               threading.Thread(target=send, args=("patient", {"inputs": [ROW], "wait": 20}))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers["patient"].status_code == 200, answers["patient"].text
    patient = answers["patient"].json()
    assert patient["status"] == "SUCCESS" and "run" in patient["timings_ms"]
    late = _dropped(http, answers["late"].json()["task_id"])
    assert late["status"] == "FAILURE" and late["error"].startswith("DeadlineExceeded")
    assert patient["batch_size"] == 2  # the two ran as one task; only one of them ran the model
    assert "run" not in late["timings_ms"]


def test_timeout_s_is_checked(stack: Stack) -> None:
    r = stack.http.post("/v1/models/iris/predict", json={"inputs": [[1, 2, 3, 4]], "timeout_s": -1})
    assert r.status_code == 422 and "timeout_s: expected a number of seconds" in r.json()["detail"]


def test_a_deadline_the_queue_cannot_meet_gets_429_with_an_honest_retry_after(
    stack: Stack,
) -> None:
    http = stack.http

    def gpu() -> dict[str, Any]:
        return next(q for q in http.get("/v1/queues").json()["queues"] if q["name"] == "gpu")

    # slow-digits takes 1.5 s a task on the one GPU worker: queue six.
    ids = [http.post("/v1/models/slow-digits/predict", json={"inputs": [ROW]}).json()["task_id"]
           for _ in range(6)]
    # The rate measured over this busy spell: 1/1.5 s (until the spell has
    # lasted 2 s, the queue keeps the rate of its last one, which earlier
    # tests' faster models set).
    # The normal lane drains it all: its own rate is the queue's.
    busy = wait_for(lambda: 0.3 < (q := gpu())["drain_per_s"] < 1.2
                    and 0.3 < q["lanes"]["normal"]["drain_per_s"] < 1.2
                    and q["lanes"]["normal"]["depth"] >= 2 and q, 30,
                    "the busy gpu queue's drain rate")
    assert busy["estimated_wait_s"] is not None
    r = http.post("/v1/models/slow-digits/predict",
                  json={"inputs": [ROW], "wait": 10, "timeout_s": 0.5})
    assert r.status_code == 429, r.text
    assert "after its timeout_s of 0.5 s" in r.json()["detail"]
    retry_after = int(r.headers["retry-after"])
    asked = time.monotonic()
    # The time the queue really took to drain to where the request fits in its timeout.
    wait_for(lambda: gpu()["lanes"]["normal"]["depth"] * 1.5 <= 0.5, 60, "the queue to drain")
    took = time.monotonic() - asked
    assert took / 2 <= retry_after <= 2 * took + 1, (retry_after, took)
    for task_id in ids:
        assert _ended(http, task_id)["status"] == "SUCCESS"
