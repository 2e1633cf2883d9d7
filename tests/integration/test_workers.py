"""How the workers are built: pinning, prefetch, and where torch is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.support.procs import descendants

pytestmark = pytest.mark.integration


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_gpu_worker_parent_never_loads_torch_its_pool_child_does(stack: Stack) -> None:
    heartbeat = stack.cluster.heartbeat("gpu-cpu@test")
    assert heartbeat is not None
    parent = heartbeat.pid
    children = descendants(parent)

    assert len(children) == 1  # concurrency 1
    assert "libtorch" not in _maps(parent)
    assert "libtorch" in _maps(children[0])


def test_gpu_worker_on_the_cpu_hides_every_gpu_from_torch(stack: Stack) -> None:
    workers = {w["name"]: w for w in stack.http.get("/v1/workers").json()["workers"]}
    # With --device N this would be "N"; on the CPU, no GPU is visible at all.
    assert workers["gpu-cpu@test"]["cuda_visible_devices"] == ""
    assert workers["cpu@test"]["cuda_visible_devices"] is None


def test_cpu_worker_has_one_child_per_requested_slot(stack: Stack) -> None:
    heartbeat = stack.cluster.heartbeat("cpu@test")
    assert heartbeat is not None
    assert heartbeat.concurrency == 2
    assert len(descendants(heartbeat.pid)) == 2


def test_a_gpu_worker_for_a_device_that_is_not_there_refuses_to_start(stack: Stack) -> None:
    import subprocess
    import sys

    from tests.support.procs import REPO

    result = subprocess.run(
        [sys.executable, "-m", "turnout", "worker", "gpu", "--device", "7"],
        cwd=REPO, env=stack.cluster.env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "--device 7:" in result.stderr and "use --device cpu" in result.stderr


# GET /v1/workers: one shape for every kind of worker (docs/api.md).
WORKER_FIELDS = {
    "name", "incarnation", "kind", "queues", "device", "concurrency", "host", "pid", "models",
    "refused", "reloading", "busy", "current_tasks", "children", "gpu_index",
    "cuda_visible_devices", "memory_limit_mb", "gpu", "telemetry", "last_seen",
}


def test_every_worker_has_the_documented_shape_with_nulls(stack: Stack) -> None:
    workers = {w["name"]: w for w in stack.http.get("/v1/workers").json()["workers"]}
    for worker in workers.values():
        assert set(worker) == WORKER_FIELDS, worker["name"]
    cpu, gpu = workers["cpu@test"], workers["gpu-cpu@test"]
    assert cpu["gpu"] is None and cpu["gpu_index"] is None and cpu["telemetry"] is None
    assert cpu["memory_limit_mb"] is None and cpu["cuda_visible_devices"] is None
    assert gpu["gpu"] is None and gpu["telemetry"] == "none: the worker runs on the CPU"
    assert gpu["memory_limit_mb"] is None and gpu["cuda_visible_devices"] == ""
