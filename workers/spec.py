"""What distinguishes one kind of worker from another, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSpec:
    kind: str  # "cpu" or "gpu"
    name: str  # Celery node name: cpu@host, gpu0@host, gpu-cpu@host
    queues: tuple[str, ...]
    concurrency: int
    prefetch_multiplier: int
    # Keep the main process from reserving a message while every child is busy.
    disable_prefetch: bool
    device: str  # the torch device the children use: "cpu" or "cuda"
    device_label: str  # what the API reports: "cpu" or "cuda:<physical index>"
    gpu_index: int | None = None
    # Threads per child for torch; None leaves torch's default.
    torch_threads: int | None = None
    # Cap on device memory for this worker's models (MiB); None: what is free.
    memory_limit_mb: float | None = None
