"""Scenario l: what the broker spends, per request and per second idle.

Read from Redis's own counters (``INFO commandstats``: calls and time per
command; ``INFO cpu``: the server's CPU seconds) around each load, less what
the idle stack spends in the same time (heartbeats, reapers, the API's
refreshes, the workers' polls). From the Redis CPU per request follows how
many requests a second one Redis core carries before it is the bottleneck.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from turnout.benchmarks.client import closed_loop_spread
from turnout.benchmarks.scenarios import BODIES, IRIS_ROW, Bench, predict_path

BATCH_ROWS = 20_000


@dataclass
class Counts:
    calls: dict[str, int]
    cpu_s: float  # Redis's own CPU (user + system)
    t: float

    @classmethod
    def read(cls, client: redis.Redis) -> Counts:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        return cls(calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
                   time.monotonic())

    def since(self, before: Counts) -> tuple[dict[str, int], float, float]:
        """(calls by command, CPU seconds, wall seconds) between the two."""
        calls = {k: n - before.calls.get(k, 0) for k, n in self.calls.items()}
        return ({k: n for k, n in calls.items() if n > 0}, self.cpu_s - before.cpu_s,
                self.t - before.t)


@dataclass
class Idle:
    commands_per_s: float
    cpu_per_s: float
    by_command: dict[str, float]


def _idle(client: redis.Redis, seconds: float) -> Idle:
    before = Counts.read(client)
    time.sleep(seconds)
    calls, cpu, wall = Counts.read(client).since(before)
    return Idle(sum(calls.values()) / wall, cpu / wall,
                {k: round(n / wall, 1) for k, n in sorted(calls.items(), key=lambda kv: -kv[1])})


def _row(label: str, units: int, unit: str, calls: dict[str, int], cpu: float, wall: float,
         idle: Idle) -> dict[str, Any]:
    """Per ``unit`` (a request, a row): commands and Redis CPU, the idle
    stack's share over ``wall`` taken off."""
    commands = sum(calls.values()) - idle.commands_per_s * wall
    cpu_used = max(1e-9, cpu - idle.cpu_per_s * wall)
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
    return {
        "system": label, "unit": unit, "units": units,
        "commands_per_unit": round(commands / max(1, units), 2),
        "redis_cpu_us_per_unit": round(1e6 * cpu_used / max(1, units), 1),
        # Requests (or rows) a second that one Redis core would carry at
        # this cost, were Redis the only limit.
        "units_per_redis_core_s": round(units / cpu_used),
        "units_per_s_here": round(units / wall, 1),
        "top_commands_per_unit": {k: round(n / max(1, units), 2) for k, n in top},
    }


def broker_cost(bench: Bench, url: str, broker_url: str) -> list[dict[str, Any]]:
    """l. Redis commands and Redis CPU per request (iris at 1 client, and at
    32 where the router micro-batches), per batch-job row, and per second
    for the idle stack."""
    client = redis.Redis.from_url(broker_url)
    try:
        workers = len(httpx.get(url + "/v1/workers", timeout=10).json()["workers"])
        idle = _idle(client, max(5.0, bench.o.duration_s))
        rows: list[dict[str, Any]] = [{
            "system": "idle stack", "unit": "second", "workers": workers, "api_processes": 1,
            "commands_per_s": round(idle.commands_per_s, 1),
            "redis_cpu_ms_per_s": round(1e3 * idle.cpu_per_s, 2),
            "top_commands_per_s": dict(list(idle.by_command.items())[:8]),
        }]
        for c in (1, 32):
            # Unrecorded warm-up, then one recorded run between two reads.
            asyncio.run(closed_loop_spread([url], predict_path("iris"), BODIES["iris"], c,
                                           duration_s=bench.o.warmup_s))
            before = Counts.read(client)
            run = asyncio.run(closed_loop_spread([url], predict_path("iris"), BODIES["iris"], c,
                                                 duration_s=bench.o.duration_s))
            calls, cpu, wall = Counts.read(client).since(before)
            done = int(run.summary()["requests"])
            rows.append(_row(f"predict iris c={c}", done, "request", calls, cpu, wall, idle)
                        | {"concurrency": c, "throughput_rps": run.summary()["throughput_rps"]})
        before = Counts.read(client)
        job = httpx.post(url + "/v1/models/iris/batch", json={"inputs": [IRIS_ROW] * BATCH_ROWS},
                         timeout=120).json()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            view = httpx.get(url + job["status_url"], timeout=30).json()
            if view["status"] in ("SUCCESS", "FAILURE"):
                break
            time.sleep(0.2)
        calls, cpu, wall = Counts.read(client).since(before)
        rows.append(_row(f"batch job, {BATCH_ROWS} rows in {job.get('chunks')} chunks",
                         BATCH_ROWS, "row", calls, cpu, wall, idle))
        return rows
    finally:
        client.close()
