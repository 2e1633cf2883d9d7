"""Submitting jobs and counting what became of every one.

Each request is recorded (when it was sent, what the API answered, its task
id); at the end every accepted task is read back through the API, and the
workers' ledger says how many times each request ran and how many results
each task stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from turnout.benchmarks.client import Connection, post
from turnout.core import delivery, redis_keys

FINAL = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class Sent:
    t: float  # wall clock when sent
    status: int  # HTTP status; 0: no answer
    task_id: str | None
    latency_s: float
    model: str


@dataclass
class Load:
    sent: list[Sent] = field(default_factory=list)

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if s.status == 202 and s.task_id]

    def refused(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(Counter(
            s.status for s in self.sent if s.status != 202).items())}


async def submit(url: str, model: str, body: dict[str, Any], rate: float, duration_s: float,
                 load: Load, stop: asyncio.Event | None = None) -> None:
    """An open loop of asynchronous submits (202 and a task id) at ``rate``."""
    host, port, raw = post(url, f"/v1/models/{model}/predict", body)
    idle: list[Connection] = []
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        reused = bool(idle)
        conn = idle.pop() if idle else Connection(host, port)
        t, t0 = time.time(), time.perf_counter()
        for attempt in (1, 2):
            try:
                status, reply = await asyncio.wait_for(conn.request(raw), 10)
                break
            except asyncio.IncompleteReadError as exc:
                conn.close()
                # A kept-alive connection the server had already closed: the
                # request never reached it (no byte came back), and any HTTP
                # client sends it again on a new connection.
                if attempt == 1 and reused and not exc.partial:
                    conn = Connection(host, port)
                    continue
                load.sent.append(Sent(t, 0, None, time.perf_counter() - t0, model))
                return
            except (OSError, ValueError, TimeoutError):
                conn.close()
                load.sent.append(Sent(t, 0, None, time.perf_counter() - t0, model))
                return
        task_id = json.loads(reply).get("task_id") if status == 202 else None
        load.sent.append(Sent(t, status, task_id, time.perf_counter() - t0, model))
        idle.append(conn)

    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < duration_s and not (stop and stop.is_set()):
        due = started + n / rate
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    if pending:
        await asyncio.gather(*pending)
    for conn in idle:
        conn.close()


async def _get(url: str, ids: list[str], concurrency: int = 16) -> dict[str, dict[str, Any]]:
    host_port = url.split("//", 1)[1]
    host, port = host_port.split(":")
    out: dict[str, dict[str, Any]] = {}
    todo = list(ids)

    async def worker() -> None:
        conn = Connection(host, int(port))
        while todo:
            task_id = todo.pop()
            raw = f"GET /v1/tasks/{task_id} HTTP/1.1\r\nHost: {host_port}\r\n\r\n".encode()
            try:
                status, body = await conn.request(raw)
                out[task_id] = json.loads(body) if status == 200 else {"status": f"HTTP {status}"}
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                todo.append(task_id)
                await asyncio.sleep(0.1)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _from_redis(client: redis.Redis, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Results read straight from the backend, for tasks the API does not list
    by id (a batch job's chunks)."""
    raws = client.mget([redis_keys.result(i) for i in ids]) if ids else []
    out = {}
    for task_id, raw in zip(ids, raws, strict=True):
        meta = json.loads(raw) if raw else {"status": "PENDING"}
        out[task_id] = {"task_id": task_id, "status": meta["status"]}
    return out


def settle(url: str, ids: list[str], timeout_s: float,
           client: redis.Redis | None = None) -> tuple[dict[str, dict[str, Any]], float]:
    """Poll until every task is final or ``timeout_s`` passes. Returns the
    last view of each task and when the last one became final (wall clock).
    With ``client``, results are read from Redis instead of the API."""
    deadline = time.monotonic() + timeout_s
    views: dict[str, dict[str, Any]] = {}
    open_ids = list(ids)
    last_done = time.time()
    while open_ids:
        if client is not None:
            try:
                views.update(_from_redis(client, open_ids))
            except redis.RedisError:
                time.sleep(0.5)
                continue
        else:
            views.update(asyncio.run(_get(url, open_ids)))
        still = [i for i in open_ids if views[i].get("status") not in FINAL]
        if len(still) < len(open_ids):
            last_done = time.time()
        open_ids = still
        if not open_ids or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    return views, last_done


@dataclass
class Ledger:
    runs: Counter[str]  # request id -> runs started
    stored: Counter[str]  # task id -> results stored
    attempts: Counter[str]  # task id -> result writes tried (stored, fenced or duplicate)
    results_t: list[float]  # when each stored result was written
    stats: dict[str, int]
    by_task: dict[str, list[dict[str, Any]]]

    @classmethod
    def read(cls, client: redis.Redis) -> Ledger:
        entries = [json.loads(e) for e in client.lrange(delivery.LEDGER, 0, -1)]
        runs: Counter[str] = Counter()
        stored: Counter[str] = Counter()
        attempts: Counter[str] = Counter()
        by_task: dict[str, list[dict[str, Any]]] = {}
        times = []
        for e in entries:
            by_task.setdefault(e["task"], []).append(e)
            if e["event"] == "start":
                runs.update(e.get("requests") or [e["task"]])
            elif e["event"] == "result":
                attempts[e["task"]] += 1
                if e.get("stored") == 1:
                    stored[e["task"]] += 1
                    times.append(float(e["t"]))
        return cls(runs, stored, attempts, sorted(times), delivery.stats(client), by_task)
