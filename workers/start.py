"""From the ``turnout worker`` command's options to a ``WorkerSpec``.

Checks the options, pins the GPU before anything imports torch, and applies a
``--queues`` override. The CLI only parses; the decisions live here.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys

from turnout.core.errors import ConfigError
from turnout.core.routes import check_queue
from turnout.core.training import LANE_GPU, LANES
from turnout.workers.spec import WorkerSpec


def worker_spec(
    kind: str,
    *,
    device: str | None = None,
    concurrency: int | None = None,
    name: str | None = None,
    queues: str | None = None,
    memory_limit_mb: float | None = None,
) -> WorkerSpec:
    if kind == "train":
        spec = _train(device, name)
    elif kind == "gpu":
        spec = _gpu(device, name, memory_limit_mb)
    else:
        spec = _cpu(concurrency, name)
    if queues:
        check = _lane if kind == "train" else check_queue
        try:
            chosen = tuple(check(q.strip()) for q in queues.split(",") if q.strip())
        except ValueError as exc:
            raise ConfigError(f"--queues: {exc}") from None
        spec = dataclasses.replace(spec, queues=chosen)
    return spec


def _cpu(concurrency: int | None, name: str | None) -> WorkerSpec:
    from turnout.workers.cpu import cpu_spec, limit_native_threads

    limit_native_threads()
    return cpu_spec(concurrency=concurrency, name=name)


def _gpu(device: str | None, name: str | None, memory_limit_mb: float | None) -> WorkerSpec:
    from turnout.workers.gpu import gpu_spec, pin_device
    from turnout.workers.gpu.nvml import device_count

    if device is None:
        raise ConfigError("turnout worker gpu needs --device N (a GPU index) or --device cpu")
    stand_in: int | None = None
    index: int | None = None
    if device.startswith("cpu:"):
        stand_in = _device_index(device[4:])
    elif device != "cpu":
        index = _device_index(device)
    if memory_limit_mb is not None and not memory_limit_mb > 0:
        raise ConfigError(f"--memory-limit-mb: expected a positive number, got {memory_limit_mb}")
    # NVML, unlike CUDA, is safe to start in the parent before the fork.
    count, why = device_count()
    if index is not None and index >= count:
        found = f"NVML reports {count} GPU(s)" if count else f"no GPU found ({why})"
        raise ConfigError(f"--device {index}: {found}; use --device cpu to run a GPU worker on the CPU")
    if index is None:
        # Said once, at start; the heartbeat carries it from then on.
        print(
            "turnout: GPU worker on the CPU: no GPU telemetry "
            f"({why or f'NVML reports {count} GPU(s), none used'})",
            file=sys.stderr,
        )
    pin_device(index)  # before anything imports torch
    return gpu_spec(index, name=name, memory_limit_mb=memory_limit_mb, stand_in=stand_in)


def _device_index(text: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"--device: expected a GPU index (0, 1, …) or 'cpu', got {text!r}")
    return int(text)


def _lane(queue: str) -> str:
    if queue not in LANES:
        raise ValueError(f"expected a training lane ({', '.join(LANES)}), got {queue!r}")
    return queue


def _train(device: str | None, name: str | None) -> WorkerSpec:
    """The training lane: ``--device N`` trains on GPU N (train.gpu); ``--device
    cpu`` trains on the CPU and takes both lanes (the GPU one standing in)."""
    from turnout.workers.gpu import pin_device

    if device is None:
        raise ConfigError("turnout worker train needs --device N (a GPU index) or --device cpu")
    host = socket.gethostname()
    if device == "cpu":
        pin_device(None)
        # Half the cores at most, so a training job leaves room for inference;
        # set before the child imports torch, which reads it once.
        threads = max(1, (os.cpu_count() or 2) // 2)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
        return WorkerSpec(
            kind="train", name=name or f"train-cpu@{host}", queues=LANES, concurrency=1,
            prefetch_multiplier=1, disable_prefetch=True, device="cpu", device_label="cpu",
            torch_threads=threads,
        )
    index = _device_index(device)
    pin_device(index)
    return WorkerSpec(
        kind="train", name=name or f"train{index}@{host}", queues=(LANE_GPU,), concurrency=1,
        prefetch_multiplier=1, disable_prefetch=True, device="cuda",
        device_label=f"cuda:{index}", gpu_index=index,
    )
