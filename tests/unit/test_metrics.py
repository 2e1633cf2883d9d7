"""The cluster gauges from heartbeats, in base units, without a stack."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.metrics import sample
from turnout.core.messages import Heartbeat, ResultDoc
from turnout.core.routes import load_routes
from turnout.core.settings import REPO_ROOT
from turnout.router.metrics import Metrics
from turnout.router.routing import LiveState


class FakeLive:
    def __init__(self, workers: list[Heartbeat]) -> None:
        self.workers = workers
        self.state = LiveState(depths={"gpu": 3}, drain_per_s={"gpu": 4.0},
                               lane_depths={"gpu": {"high": 0, "normal": 2, "low": 1}},
                               lane_drain_per_s={"gpu": {"normal": 3.5, "low": 0.5}})
        self.lane_depths = self.state.lane_depths
        self.broker_ok = True
        self.delivery_stats = {"given_back_dead": 2, "duplicate_results": 1}

    def known_queues(self) -> list[str]:
        return ["cpu", "gpu"]


class FakeBatcher:
    def __init__(self) -> None:
        self.sent_batches: Counter[str] = Counter({"digits-cnn": 4})
        self.sent_jobs: Counter[str] = Counter({"digits-cnn": 40})


GPU_WORKER = {
    "name": "gpu0@box", "kind": "gpu", "device": "cuda", "host": "box", "busy": 1,
    "concurrency": 1, "models": ["digits-cnn", "minilm"], "refused": {"big": "needs 99 GiB"},
    "gpu_index": 0,
    "gpu": {"index": 0, "uuid": "GPU-1", "memory_used_mb": 1024.0, "memory_total_mb": 143771.0,
            "utilization_pct": 87, "temperature_c": 41, "power_w": 312.5},
}


def test_gpu_and_worker_gauges_in_base_units() -> None:
    table = load_routes(REPO_ROOT / "configs" / "routes.yaml")
    metrics = Metrics()
    metrics.watch_cluster(FakeLive([Heartbeat.from_wire(GPU_WORKER)]), FakeBatcher(), lambda: table)  # type: ignore[arg-type]
    text = metrics.render().decode()
    gpu = {"worker": "gpu0@box", "host": "box", "gpu": "0", "uuid": "GPU-1"}
    assert sample(text, "turnout_gpu_utilization_ratio", **gpu) == 0.87
    assert sample(text, "turnout_gpu_memory_used_bytes", **gpu) == 1024 * 1024 * 1024
    assert sample(text, "turnout_gpu_memory_total_bytes", **gpu) == 143771 * 1024 * 1024
    assert sample(text, "turnout_gpu_temperature_celsius", **gpu) == 41
    assert sample(text, "turnout_gpu_power_watts", **gpu) == 312.5
    assert sample(text, "turnout_worker_busy_slots", worker="gpu0@box") == 1
    assert sample(text, "turnout_worker_refused_models", worker="gpu0@box", model="big") == 1
    assert sample(text, "turnout_queue_depth", queue="gpu") == 3
    assert sample(text, "turnout_queue_lane_depth", queue="gpu", lane="low") == 1
    assert sample(text, "turnout_queue_lane_drain_per_second", queue="gpu", lane="normal") == 3.5
    assert sample(text, "turnout_redeliveries_total", why="dead") == 2
    assert sample(text, "turnout_delivery_events_total", event="duplicate_results") == 1
    assert sample(text, "turnout_batches_total", model="digits-cnn") == 4


def test_a_finished_task_is_timed_per_request() -> None:
    metrics = Metrics()
    meta = {"status": "SUCCESS", "result": {"version": "2", "results": [
        {"predictions": [1, 2], "timings_ms": {"queued": 4.0, "run": 10.0, "total": 15.0}},
        {"predictions": [3], "timings_ms": {"queued": 5.0, "run": 10.0, "total": 16.0},
         "oom_splits": 2},
    ]}}
    metrics.observe_result("cnn", "1", ResultDoc("t1", meta["status"], meta["result"]))
    metrics.observe_result("cnn", "1", ResultDoc("t2", "FAILURE", {"exc_type": "X"}))
    text = metrics.render().decode()
    assert sample(text, "turnout_queue_time_seconds_count", model="cnn", version="2") == 2
    assert sample(text, "turnout_queue_time_seconds_sum", model="cnn", version="2") == pytest.approx(0.009)
    assert sample(text, "turnout_batch_size_sum", model="cnn") == 2
    assert sample(text, "turnout_batch_rows_sum", model="cnn") == 3
    assert sample(text, "turnout_oom_splits_total", model="cnn") == 2
    assert sample(text, "turnout_tasks_total", model="cnn", status="FAILURE") == 1
