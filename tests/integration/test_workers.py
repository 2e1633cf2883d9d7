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
    parent = int(heartbeat["pid"])
    children = descendants(parent)

    assert len(children) == 1  # concurrency 1
    assert "libtorch" not in _maps(parent)
    assert "libtorch" in _maps(children[0])


def test_gpu_worker_environment_pins_the_device(stack: Stack) -> None:
    heartbeat = stack.cluster.heartbeat("gpu-cpu@test")
    assert heartbeat is not None
    environ = Path(f"/proc/{heartbeat['pid']}/environ").read_bytes().split(b"\0")
    # On the CPU the worker hides every GPU; with --device N it would be "N".
    assert b"CUDA_VISIBLE_DEVICES=" in environ
    assert b"CUDA_DEVICE_ORDER=PCI_BUS_ID" in environ


def test_cpu_worker_has_one_child_per_requested_slot(stack: Stack) -> None:
    heartbeat = stack.cluster.heartbeat("cpu@test")
    assert heartbeat is not None
    assert heartbeat["concurrency"] == 2
    assert len(descendants(int(heartbeat["pid"]))) == 2
