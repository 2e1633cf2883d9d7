"""Routing on live state with several GPU workers (on the CPU, each standing in
for a device): per-device placement, steering around a worker that refused a
model, one job per GPU worker, fallback and 503 as workers go away."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from sklearn.datasets import load_digits

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, Proc, poll_task, wait_for

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-gpu.yaml"
ROWS = load_digits().data[:2].tolist()
# Room for digits-cnn (~33 MiB estimated) but not for minilm (~163 MiB).
LIMIT_MB = "100"


@dataclass
class GpuStack:
    cluster: Cluster
    http: httpx.Client
    workers: dict[str, Proc]
    control: Celery

    def predict(self, model: str, inputs: list[Any], wait: float = 20) -> dict[str, Any]:
        r = self.http.post(f"/v1/models/{model}/predict", json={"inputs": inputs, "wait": wait})
        assert r.status_code == 200, r.text
        return dict(r.json())

    def worker_view(self, name: str) -> dict[str, Any]:
        views = {w["name"]: w for w in self.http.get("/v1/workers").json()["workers"]}
        return dict(views[name])


@pytest.fixture(scope="module")
def gpus(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpuStack]:
    tmp = tmp_path_factory.mktemp("gpus")
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(server.settings, models_dir, ROUTES, tmp)
    control = Celery(broker=server.settings.url)
    control.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    try:
        workers = {
            "gpu1-cpu@test": cluster.spawn("gpu1-cpu@test", "worker", "gpu", "--device", "cpu:1", "--name", "gpu1-cpu@test"),
            "gpu2-cpu@test": cluster.spawn("gpu2-cpu@test", "worker", "gpu", "--device", "cpu:2", "--name", "gpu2-cpu@test"),
            "gpu3-cpu@test": cluster.spawn(
                "gpu3-cpu@test", "worker", "gpu", "--device", "cpu:3", "--name", "gpu3-cpu@test",
                "--memory-limit-mb", LIMIT_MB,
            ),
            "cpu@test": cluster.spawn("cpu@test", "worker", "cpu", "--name", "cpu@test", "--concurrency", "1"),
        }
        for name, proc in workers.items():
            wait_for(lambda n=name: cluster.heartbeat(n), 120, f"worker {name}", proc.proc, proc.log)
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_for(lambda: len(http.get("/v1/workers").json()["workers"]) == 4, 10, "the API to see 4 workers")
            yield GpuStack(cluster, http, workers, control)
    finally:
        control.close()
        cluster.stop()
        server.stop()


def test_a_worker_refuses_a_model_that_does_not_fit_and_says_so(gpus: GpuStack) -> None:
    view = gpus.worker_view("gpu3-cpu@test")
    assert "digits-cnn" in view["models"] and "minilm" not in view["models"]
    assert view["refused"]["minilm"].startswith("needs ~")
    assert "MiB free under --memory-limit-mb" in view["refused"]["minilm"]
    assert view["memory_limit_mb"] == float(LIMIT_MB)
    log = gpus.workers["gpu3-cpu@test"].log.read_text()
    assert "model minilm version 1 not loaded: needs ~" in log
    # The workers that have room loaded it.
    assert "minilm" in gpus.worker_view("gpu1-cpu@test")["models"]


def test_a_gpu_worker_without_nvml_says_so_once_and_reports_no_gpu(gpus: GpuStack) -> None:
    view = gpus.worker_view("gpu1-cpu@test")
    assert view["device"] == "cpu" and view["gpu"] is None
    assert view["telemetry"] == "none: the worker runs on the CPU"
    assert view["gpu_index"] == 1 and view["queues"] == ["gpu", "gpu.1"]
    log = gpus.workers["gpu1-cpu@test"].log.read_text()
    assert log.count("no GPU telemetry") == 1
    # Not a GPU: /v1/devices lists none of these stand-ins.
    assert gpus.http.get("/v1/devices").json() == {"devices": []}


def test_a_placed_model_runs_only_on_its_devices_spread_by_queued_work(gpus: GpuStack) -> None:
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: gpus.predict("digits-placed", ROWS), range(8)))
    queues = [b["queue"] for b in bodies]
    workers = {b["queue"]: set() for b in bodies}
    for b in bodies:
        workers[b["queue"]].add(b["worker"])
    assert set(queues) == {"gpu.1", "gpu.2"}, queues
    assert workers == {"gpu.1": {"gpu1-cpu@test"}, "gpu.2": {"gpu2-cpu@test"}}
    assert all(b["device"] == "cpu" for b in bodies)
    models = {m["name"]: m for m in gpus.http.get("/v1/models").json()["models"]}
    assert models["digits-placed"]["devices"] == [1, 2]
    assert models["digits-placed"]["serving_queue"] in ("gpu.1", "gpu.2")


def test_jobs_are_steered_around_a_worker_that_refused_their_model(gpus: GpuStack) -> None:
    models = {m["name"]: m for m in gpus.http.get("/v1/models").json()["models"]}
    assert models["minilm"]["available"] and models["minilm"]["serving_queue"] in ("gpu.1", "gpu.2")
    bodies = [gpus.predict("minilm", ["steer me"]) for _ in range(6)]
    assert {b["queue"] for b in bodies} <= {"gpu.1", "gpu.2"}
    assert {b["worker"] for b in bodies} <= {"gpu1-cpu@test", "gpu2-cpu@test"}
    assert all(len(b["predictions"][0]) == 384 for b in bodies)


def test_no_short_job_waits_behind_a_long_one_and_busy_workers_hold_no_reserved_job(gpus: GpuStack) -> None:
    names = ["gpu1-cpu@test", "gpu2-cpu@test", "gpu3-cpu@test"]
    # With destinations named, inspect returns as soon as those three reply.
    inspect = gpus.control.control.inspect(destination=names, timeout=2)

    def running(task_id: str) -> str | None:
        for name, tasks in (inspect.active() or {}).items():
            if any(t["id"] == task_id for t in tasks):
                return name
        return None

    long_id = gpus.http.post("/v1/models/slow-digits/predict", json={"inputs": ROWS}).json()["task_id"]
    busy = wait_for(lambda: running(long_id), 10, "the long job to start")
    shorts = [gpus.predict("digits-cnn", ROWS, wait=5) for _ in range(10)]
    assert gpus.http.get(f"/v1/tasks/{long_id}").json()["status"] == "STARTED"
    assert all(b["worker"] != busy for b in shorts), (busy, [b["worker"] for b in shorts])
    assert max(b["timings_ms"]["queued"] for b in shorts) < 1000
    assert (inspect.reserved() or {}).get(busy) == []
    poll_task(gpus.http, long_id, {"SUCCESS"})

    # Saturate: one long job per GPU worker and one more. The extra one waits
    # in Redis, not in a busy worker's buffer, for whichever worker frees first.
    ids = [
        gpus.http.post("/v1/models/slow-digits/predict", json={"inputs": ROWS}).json()["task_id"]
        for _ in range(4)
    ]
    wait_for(lambda: sum(len(t) for t in (inspect.active() or {}).values()) == 3, 10, "three long jobs to start")
    assert inspect.reserved() == {n: [] for n in names}
    assert gpus.cluster.client.llen("gpu") == 1
    queues = {q["name"]: q for q in gpus.http.get("/v1/queues").json()["queues"]}
    assert queues["gpu"]["depth"] == 1
    # The heartbeats say the same: every GPU worker runs one job, no more.
    wait_for(lambda: [gpus.worker_view(n)["busy"] for n in names] == [1, 1, 1], 2, "heartbeats to show three busy workers")
    assert all(len(gpus.worker_view(n)["current_tasks"]) == 1 for n in names)
    for task_id in ids:
        poll_task(gpus.http, task_id, {"SUCCESS"})


def test_as_gpu_workers_go_away_jobs_fall_back_then_get_a_clear_503(gpus: GpuStack) -> None:
    for name in ("gpu1-cpu@test", "gpu2-cpu@test"):
        gpus.workers[name].stop()
    wait_for(lambda: len(gpus.http.get("/v1/workers").json()["workers"]) == 2, 15, "two workers to leave")

    r = gpus.http.post("/v1/models/digits-placed/predict", json={"inputs": ROWS})
    assert r.status_code == 503
    assert "no live worker that serves it consumes queue 'gpu.1' or 'gpu.2' and the route has no fallback" in r.json()["detail"]

    r = gpus.http.post("/v1/models/minilm/predict", json={"inputs": ["hello"]})
    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "worker gpu3-cpu@test refused it (needs ~" in detail and "--memory-limit-mb" in detail

    # digits-cnn still has a GPU worker (gpu3 holds it)...
    assert gpus.predict("digits-cnn", ROWS)["queue"] == "gpu"
    gpus.workers["gpu3-cpu@test"].stop()
    wait_for(lambda: len(gpus.http.get("/v1/workers").json()["workers"]) == 1, 15, "the last GPU worker to leave")
    # ...and then falls back to the CPU queue, and says where it ran.
    body = gpus.predict("digits-cnn", ROWS)
    assert (body["queue"], body["worker"], body["device"]) == ("cpu", "cpu@test", "cpu")
    models = {m["name"]: m for m in gpus.http.get("/v1/models").json()["models"]}
    assert models["digits-cnn"]["serving_queue"] == "cpu" and models["digits-cnn"]["serving_workers"] == ["cpu@test"]
    assert not models["minilm"]["available"]
    assert "no live worker that serves it consumes queue 'gpu'" in models["minilm"]["unavailable_because"]
