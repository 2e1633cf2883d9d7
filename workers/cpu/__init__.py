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
        prefetch_multiplier=4,
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
