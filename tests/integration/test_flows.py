"""Pipelines and ensembles across queues, run by real workers on a real Redis:
answers, the steps' record, and workers SIGKILLed at each of the three points
of a step (mid-step, after its model returned and before the hop, just after
the hop): every request answered once, every step handed on once, nothing
left unacked once the reaper has run."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sklearn.datasets import load_digits, load_iris

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, Proc, poll_task, wait_for
from turnout.core import delivery

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-flows.yaml"
DIGITS = load_digits()
IRIS = load_iris()
GPU = "gpu-flows@test"


@dataclass
class Flows:
    cluster: Cluster
    http: httpx.Client
    faults: Path
    gpu: Proc

    def ledger(self) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in self.cluster.client.lrange(delivery.LEDGER, 0, -1)]

    def start_gpu(self, dead: str) -> None:
        """A new GPU worker in place of incarnation ``dead``, serving."""
        self.gpu = self.cluster.worker("gpu", GPU, "--device", "cpu")

        def serving() -> bool:
            beat = self.cluster.heartbeat(GPU)
            if beat is None or beat.incarnation == dead or "digits-cnn" not in beat.models:
                return False
            listed = {m["name"]: m for m in self.http.get("/v1/models").json()["models"]}
            return bool(listed["digits-cnn"]["available"] and listed["iris-knn"]["available"])

        wait_for(serving, 60, "the API to see the new GPU worker serve")


@pytest.fixture(scope="module")
def flows(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flows]:
    tmp = tmp_path_factory.mktemp("flows")
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    faults = tmp / "faults"
    faults.mkdir()
    cluster = Cluster(server.settings, models_dir, ROUTES, tmp,
                      extra_env={"TURNOUT_LEDGER": "1", "TURNOUT_DEAD_AFTER_S": "3",
                                 "TURNOUT_FAULT_DIR": str(faults)})
    try:
        cluster.worker("cpu", "cpu-flows@test", "--concurrency", "2")
        gpu = cluster.worker("gpu", GPU, "--device", "cpu")
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=60) as http:
            wait_for(lambda: len(http.get("/v1/workers").json()["workers"]) >= 2, 30,
                     "the API to see both workers")
            yield Flows(cluster, http, faults, gpu)
    finally:
        cluster.stop()
        server.stop()


def _direct(http: httpx.Client, model: str, rows: list[Any]) -> list[Any]:
    r = http.post(f"/v1/models/{model}/predict", json={"inputs": rows, "wait": 30})
    assert r.status_code == 200, r.text
    return list(r.json()["predictions"])


def test_a_pipeline_runs_cpu_then_gpu_then_cpu(flows: Flows) -> None:
    rows = DIGITS.data[:5].tolist()
    r = flows.http.post("/v1/models/digits-pipeline/predict", json={"inputs": rows, "wait": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    labels = _direct(flows.http, "digits-cnn", rows)
    assert body["predictions"] == [f"digit-{label}" for label in labels]
    steps = body["steps"]
    assert [s["model"] for s in steps] == ["tests.support.flows:clip_pixels", "digits-cnn",
                                           "tests.support.flows:name_digit"]
    assert [s["queue"] for s in steps] == ["cpu", "gpu", "cpu"]
    assert steps[1]["worker"] == GPU and steps[1]["version"] == "1"
    assert steps[0]["worker"] == steps[2]["worker"] == "cpu-flows@test"
    assert all(s["timings_ms"]["run"] >= 0 for s in steps)
    assert body["version"] == "digits-cnn@1"
    # It is listed like any model, with its steps.
    listed = {m["name"]: m for m in flows.http.get("/v1/models").json()["models"]}
    assert listed["digits-pipeline"]["framework"] == "pipeline"
    assert [s.get("model") or s.get("transform") for s in listed["digits-pipeline"]["steps"]][1] \
        == "digits-cnn"
    described = flows.http.get("/v1/models/digits-pipeline").json()
    assert described["kind"] == "pipeline" and described["models"] == {"digits-cnn": "1"}


def test_an_ensemble_votes_across_queues(flows: Flows) -> None:
    rows = IRIS.data[::10].tolist()
    r = flows.http.post("/v1/models/iris-vote/predict", json={"inputs": rows, "wait": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    members = [_direct(flows.http, m, rows) for m in ("iris", "iris-tree", "iris-knn")]
    expected = [Counter(answers).most_common(1)[0][0] for answers in zip(*members, strict=True)]
    assert body["predictions"] == expected
    assert len(body["probabilities"]) == len(rows)
    steps = body["steps"]
    assert {s["model"] for s in steps[:3]} == {"iris", "iris-tree", "iris-knn"}
    assert steps[-1]["kind"] == "combine"
    assert {s["queue"] for s in steps} == {"cpu", "gpu"}
    own = flows.http.post("/v1/models/iris-own-vote/predict", json={"inputs": rows, "wait": 30})
    assert own.status_code == 200 and own.json()["predictions"] == expected


def test_a_failing_step_fails_its_request_and_the_rest_never_runs(flows: Flows) -> None:
    rows = DIGITS.data[:2].tolist()
    r = flows.http.post("/v1/models/broken-pipeline/predict", json={"inputs": rows, "wait": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "FAILURE"
    assert "TransformError" in body["error"] and "always fails" in body["error"]
    starts = [e for e in flows.ledger() if e.get("flow") == body["task_id"] and e["event"] == "start"]
    assert [e["step"] for e in starts] == [0]


def test_bad_input_is_named_against_the_first_model(flows: Flows) -> None:
    r = flows.http.post("/v1/models/iris-vote/predict", json={"inputs": [[1, 2]]})
    assert r.status_code == 422
    assert "expected 4 numbers" in r.json()["detail"]
    r = flows.http.post("/v1/models/iris-vote/versions/1/predict", json={"inputs": [[1, 2, 3, 4]]})
    assert r.status_code == 404


def test_a_deadline_drops_the_request_at_the_step_that_cannot_start(flows: Flows) -> None:
    rows = DIGITS.data[:1].tolist()
    r = flows.http.post("/v1/models/slow-pipeline/predict",
                        json={"inputs": rows, "wait": 10, "timeout_s": 1.0})
    assert r.status_code == 504, r.text
    assert r.headers["x-turnout-error"] == "DeadlineExceeded"
    task_id = r.json()["detail"].rsplit("task ", 1)[1].rstrip(")")
    view = poll_task(flows.http, task_id, {"FAILURE", "SUCCESS"}, timeout=20)
    assert view["status"] == "FAILURE" and view["error"].startswith("DeadlineExceeded")
    assert "step 1 (digits-cnn)" in view["error"]
    starts = [e["step"] for e in flows.ledger() if e.get("flow") == task_id and e["event"] == "start"]
    assert starts == [0]  # the model and the last transform never ran


def _kill_at(flows: Flows, point: str, model: str, rows: list[Any], step: str) -> str:
    """Send one request with ``point`` of ``step`` (the GPU one) armed;
    SIGKILL the whole GPU worker when its child stops there; start it again
    and return the request's id once it has finished."""
    arm = flows.faults / f"arm-{point}"
    arm.write_text(step)
    try:
        r = flows.http.post(f"/v1/models/{model}/predict", json={"inputs": rows})
        assert r.status_code == 202, r.text
        task_id = str(r.json()["task_id"])
        flag = wait_for(lambda: sorted(flows.faults.glob(f"{point}-*")), 30,
                        f"the worker to reach {point!r}")[0]
    finally:
        arm.unlink()
    beat = flows.cluster.heartbeat(GPU)
    os.killpg(flows.gpu.proc.pid, signal.SIGKILL)
    flows.gpu.proc.wait(10)
    flag.unlink()
    flows.start_gpu(beat.incarnation if beat is not None else "")
    poll_task(flows.http, task_id, {"SUCCESS", "FAILURE"}, timeout=60)
    return task_id


def _check_once(flows: Flows, task_id: str) -> None:
    """One result stored, and nothing of the request left held or unacked."""
    ledger = [e for e in flows.ledger() if e.get("flow") == task_id]
    results = [e for e in ledger if e["event"] == "result" and e["stored"] == 1]
    assert len(results) == 1, ledger
    client = flows.cluster.client

    def settled() -> bool:
        owned = [k for k, v in client.hgetall(delivery.LEASES).items() if task_id.encode() in k]
        unacked = [t for t, p in client.hgetall(delivery.UNACKED).items() if task_id.encode() in p]
        return not owned and not unacked

    wait_for(settled, 20, f"nothing of {task_id} left held")


@pytest.mark.parametrize("point", ["run", "hop", "handed"])
def test_a_pipeline_step_killed_at_each_point_is_handed_on_once(flows: Flows, point: str) -> None:
    rows = DIGITS.data[10:13].tolist()
    expected = [f"digit-{label}" for label in _direct(flows.http, "digits-cnn", rows)]
    task_id = _kill_at(flows, point, "digits-pipeline", rows, "digits-cnn")
    view = flows.http.get(f"/v1/tasks/{task_id}").json()
    assert view["status"] == "SUCCESS", view
    assert view["predictions"] == expected
    _check_once(flows, task_id)
    handed = Counter(e["step"] for e in flows.ledger()
                     if e.get("flow") == task_id and e["event"] == "hop" and e["stored"] == 1)
    assert handed == Counter({0: 1, 1: 1}), handed
    starts = [e["step"] for e in flows.ledger() if e.get("flow") == task_id and e["event"] == "start"]
    # The GPU step ran twice when it was killed before its hop, once after.
    assert starts.count(1) == (1 if point == "handed" else 2), starts


@pytest.mark.parametrize("point", ["run", "hop", "handed"])
def test_an_ensemble_branch_killed_at_each_point_joins_once(flows: Flows, point: str) -> None:
    rows = IRIS.data[::25].tolist()
    task_id = _kill_at(flows, point, "iris-vote", rows, "iris-knn")
    view = flows.http.get(f"/v1/tasks/{task_id}").json()
    assert view["status"] == "SUCCESS", view
    assert len(view["predictions"]) == len(rows)
    ledger = [e for e in flows.ledger() if e.get("flow") == task_id]
    joins = Counter(e["step"] for e in ledger if e["event"] == "hop" and e["stored"] == 1)
    assert joins == Counter({0: 1, 1: 1, 2: 1}), ledger
    assert len([e for e in ledger if e["event"] == "result" and e["stored"] == 1]) == 1
    combines = [e for e in ledger if e["event"] == "start" and e["step"] == 3]
    assert len(combines) == 1, ledger
    _check_once(flows, task_id)


def test_a_batch_job_runs_each_chunk_through_the_ensemble(flows: Flows) -> None:
    rows = IRIS.data[::5].tolist()
    r = flows.http.post("/v1/models/iris-vote/batch", json={"inputs": rows, "chunk_rows": 10})
    assert r.status_code == 202, r.text
    assert r.json()["chunks"] == 3
    batch_id = r.json()["batch_id"]

    def done() -> dict[str, Any] | None:
        view = flows.http.get(f"/v1/batches/{batch_id}").json()
        return view if view["status"] in ("SUCCESS", "FAILURE") else None

    view = wait_for(done, 60, "the batch job")
    assert view["status"] == "SUCCESS", view
    members = [_direct(flows.http, m, rows) for m in ("iris", "iris-tree", "iris-knn")]
    assert view["predictions"] == [Counter(a).most_common(1)[0][0]
                                   for a in zip(*members, strict=True)]
