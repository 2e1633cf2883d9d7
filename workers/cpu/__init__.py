"""The CPU worker: a prefork pool, one child per core, on queue ``cpu``."""

from __future__ import annotations

import os
import socket

from turnout.workers.spec import WorkerSpec


def cpu_spec(concurrency: int | None = None, name: str | None = None) -> WorkerSpec:
    cores = os.cpu_count() or 1
    return WorkerSpec(
        kind="cpu",
        name=name or f"cpu@{socket.gethostname()}",
        queues=("cpu",),
        concurrency=concurrency or cores,
        # One message in hand per child beyond the one it runs: with Celery's
        # usual 4, a worker held eight batch chunks ahead of any interactive
        # request that came after them (bench i, 2026-12-02: iris p99 with a
        # 200k-row batch queued 50 ms at 4, 15 ms at 1, idle 10 ms), and 1
        # cost no throughput (iris c=32: 1,960 and 1,975 req/s). No prefetch
        # at all cost a third of it (1,315).
        prefetch_multiplier=1,
        disable_prefetch=False,
        device="cpu",
        device_label="cpu",
        # One thread per child: the children already use every core between them.
        torch_threads=1,
    )


def limit_native_threads() -> None:
    """Keep BLAS/OpenMP pools to one thread per child; must run before numpy loads."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
