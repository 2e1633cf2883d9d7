"""One API process holds 1,000 requests waiting for their results at once,
without a thread each and with bounded memory."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_digits

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

WAITERS = 1000
ROW = load_digits().data[0].tolist()
LABEL = int(load_digits().target[0])


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


def test_a_thousand_concurrent_waiters(stack: Stack) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * WAITERS:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * WAITERS), hard))
    api = next(p for p in stack.cluster.procs if p.name.startswith("api-"))
    if _status(api.proc.pid)["Threads"] > 50 or resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 2 * WAITERS:
        pytest.skip("cannot open enough connections here")
    stack.http.post("/v1/models/hold/predict", json={"inputs": [ROW], "wait": 30})  # warm
    before = _status(api.proc.pid)
    peak = dict(before)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = _status(api.proc.pid)
            peak["Threads"] = max(peak["Threads"], now["Threads"])
            peak["VmRSS"] = max(peak["VmRSS"], now["VmRSS"])
            time.sleep(0.05)

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=WAITERS, max_keepalive_connections=WAITERS)
        async with httpx.AsyncClient(base_url=stack.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(client.post("/v1/models/hold/predict", json={"inputs": [ROW], "wait": 45}) for _ in range(WAITERS))
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        responses = asyncio.run(run())
    finally:
        stop.set()
        sampler.join()
    elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [200] * WAITERS
    bodies = [r.json() for r in responses]
    assert len({b["task_id"] for b in bodies}) == WAITERS
    assert all(b["predictions"] == [LABEL] for b in bodies)
    # They really waited together: a few batches of a second each, not 1,000.
    assert elapsed < 30 and max(b.get("batch_size", 1) for b in bodies) > 100
    # No thread per waiting request, and memory stays bounded.
    assert peak["Threads"] - before["Threads"] < 10, (before, peak)
    assert peak["VmRSS"] - before["VmRSS"] < 150 * 1024, (before, peak)  # kB
