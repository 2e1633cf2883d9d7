"""The GPU worker: one process per device, one job at a time.

The device is pinned through ``CUDA_VISIBLE_DEVICES`` before torch is imported
anywhere in the process, so torch sees exactly one GPU (``cuda:0``), and the
Celery parent never initialises CUDA: models load in the pool child, after fork.
"""

from __future__ import annotations

import os
import socket
import sys

from turnout.workers.spec import WorkerSpec


def pin_device(device: int | None) -> None:
    """Pin this process to GPU ``device`` (or to no GPU when None). Must run
    before torch is imported, since CUDA reads the variables once."""
    if "torch" in sys.modules:
        raise RuntimeError("pin_device() must run before torch is imported")
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if device is None else str(device)


def gpu_spec(
    device: int | None,
    name: str | None = None,
    memory_limit_mb: float | None = None,
    stand_in: int | None = None,
) -> WorkerSpec:
    """A GPU worker for device index ``device``, or on the CPU when None.

    On the CPU, ``stand_in`` makes the worker take device ``i``'s place in
    the queue layout (it consumes ``gpu.<i>``): a laptop can then rehearse a
    multi-GPU route table, and the tests can prove per-device placement.
    """
    host = socket.gethostname()
    if device is None:
        own = () if stand_in is None else (f"gpu.{stand_in}",)
        default = "gpu-cpu" if stand_in is None else f"gpu{stand_in}-cpu"
        return WorkerSpec(
            kind="gpu",
            name=name or f"{default}@{host}",
            queues=("gpu", *own),
            concurrency=1,
            prefetch_multiplier=1,
            disable_prefetch=True,
            device="cpu",
            device_label="cpu",
            # It stands in for a GPU, which would barely use the host's cores:
            # half of them, so that it does not starve the CPU queue's workers.
            torch_threads=max(1, (os.cpu_count() or 2) // 2),
            gpu_index=stand_in,
            memory_limit_mb=memory_limit_mb,
        )
    return WorkerSpec(
        kind="gpu",
        name=name or f"gpu{device}@{host}",
        queues=("gpu", f"gpu.{device}"),
        concurrency=1,
        prefetch_multiplier=1,
        disable_prefetch=True,
        device="cuda",
        device_label=f"cuda:{device}",
        gpu_index=device,
        memory_limit_mb=memory_limit_mb,
    )
