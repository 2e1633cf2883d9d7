from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from turnout.workers.cpu import cpu_spec
from turnout.workers.gpu import gpu_spec, pin_device


def test_cpu_worker_uses_every_core_and_holds_one_message_ahead_per_child() -> None:
    spec = cpu_spec()
    assert spec.queues == ("cpu",)
    assert spec.concurrency == (os.cpu_count() or 1)
    # Not Celery's usual 4: chunks held ahead would delay interactive requests (bench i).
    assert spec.prefetch_multiplier == 1 and not spec.disable_prefetch
    assert spec.name.startswith("cpu@")


def test_gpu_worker_takes_one_job_at_a_time_on_its_own_device() -> None:
    spec = gpu_spec(3)
    assert spec.queues == ("gpu", "gpu.3")
    assert (spec.concurrency, spec.prefetch_multiplier, spec.disable_prefetch) == (1, 1, True)
    assert spec.device == "cuda" and spec.device_label == "cuda:3"
    assert spec.name.startswith("gpu3@")


def test_gpu_worker_on_the_cpu_says_so() -> None:
    spec = gpu_spec(None)
    assert spec.queues == ("gpu",)
    assert spec.device == spec.device_label == "cpu"
    assert spec.name.startswith("gpu-cpu@")


def test_pinning_sets_the_device_before_torch_and_refuses_after() -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from turnout.workers.gpu import pin_device
        pin_device(2)
        assert "torch" not in sys.modules
        print(os.environ["CUDA_VISIBLE_DEVICES"], os.environ["CUDA_DEVICE_ORDER"])
        import torch
        try:
            pin_device(1)
        except RuntimeError as exc:
            print("refused:", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["2 PCI_BUS_ID", "refused: pin_device() must run before torch is imported"]


def test_pinning_in_this_process_is_refused_once_torch_is_loaded() -> None:
    import torch  # noqa: F401

    with pytest.raises(RuntimeError):
        pin_device(0)


def test_a_cpu_worker_can_stand_in_for_a_device() -> None:
    spec = gpu_spec(None, stand_in=2, memory_limit_mb=512)
    assert spec.queues == ("gpu", "gpu.2")
    assert spec.device == spec.device_label == "cpu"
    assert spec.gpu_index == 2 and spec.memory_limit_mb == 512
    assert spec.name.startswith("gpu2-cpu@")
