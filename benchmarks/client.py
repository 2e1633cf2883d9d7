"""A load generator cheap enough not to be the bottleneck.

HTTP/1.1 with keep-alive over asyncio streams, one connection per concurrent
caller, requests written as prepared bytes and responses read by
Content-Length: a few tens of microseconds of CPU per request, against the
hundreds that a general-purpose client spends. It speaks only what the
servers under test answer (no chunked bodies, no redirects).

Two shapes of load: closed loop (``concurrency`` callers, each sending its
next request when the last is answered) for throughput and latency, and open
loop (a steady ``rate`` whatever the answers) for the isolation scenario.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Run:
    """What one load run measured."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    async def send(self, conn: Connection, raw: bytes, keep_bodies: int = 0) -> bool:
        """One request on ``conn``, recorded; False if the connection failed."""
        t0 = time.perf_counter()
        try:
            status, reply = await conn.request(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.errors += 1
            conn.close()
            return False
        elapsed = (time.perf_counter() - t0) * 1000
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == 200:
            self.latencies_ms.append(elapsed)
            if len(self.bodies) < keep_bodies:
                self.bodies.append(reply)
        else:
            self.errors += 1
        return True

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        k = min(len(data) - 1, max(0, round(p / 100 * (len(data) - 1))))
        return data[k]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.ok,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throughput_rps": round(self.throughput, 1),
            "p50_ms": round(self.percentile(50), 3),
            "p90_ms": round(self.percentile(90), 3),
            "p99_ms": round(self.percentile(99), 3),
            "wall_s": round(self.wall_s, 3),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_per_request_us": round(1e6 * self.client_cpu_s / max(1, self.ok + self.errors), 1),
        }


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)
            elif lower == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True)
class RawBody:
    """A body sent as it is (an image), not as JSON."""

    content_type: str
    data: bytes


def post(url: str, path: str, body: Any) -> tuple[str, int, bytes]:
    """(host, port, the prepared request bytes) for a JSON POST, or a raw one."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if isinstance(body, RawBody):
        kind, payload = body.content_type, body.data
    else:
        kind, payload = "application/json", json.dumps(body, separators=(",", ":")).encode()
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    return host, port, raw


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or asked)."""

    def __init__(self, label: str, total: float, enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0

    def update(self, done: float, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        frac = min(1.0, done / self.total) if self.total else 1.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r  {self.label:<34} [{bar:<30}] {frac * 100:5.1f}% {note:<24}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


def _finished(run: Run, conns: list[Connection], started: float, cpu0: float,
              progress: Progress | None) -> Run:
    """A closed loop's run, timed, its connections closed."""
    run.wall_s = time.perf_counter() - started
    run.client_cpu_s = time.process_time() - cpu0
    for conn in conns:
        conn.close()
    if progress is not None:
        progress.close()
    return run


async def closed_loop(
    url: str,
    path: str,
    body: Any,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    progress: Progress | None = None,
    keep_bodies: int = 0,
    warmup: int = 0,
) -> Run:
    """``concurrency`` callers send back to back for ``duration_s`` seconds
    (or until ``requests`` have been sent)."""
    host, port, raw = post(url, path, body)
    run = Run()
    conns = [Connection(host, port) for _ in range(concurrency)]
    for conn in conns[: max(warmup, 0)]:
        await conn.request(raw)
    sent = 0
    started = time.perf_counter()
    deadline = started + duration_s if duration_s else float("inf")
    cpu0 = time.process_time()

    async def caller(conn: Connection) -> None:
        nonlocal sent
        while True:
            now = time.perf_counter()
            if now >= deadline or (requests is not None and sent >= requests):
                return
            sent += 1
            await run.send(conn, raw, keep_bodies)
            if progress is not None:
                done = (now - started) if duration_s else sent
                progress.update(done, f"{run.ok} ok")

    await asyncio.gather(*(caller(c) for c in conns))
    return _finished(run, conns, started, cpu0, progress)


async def closed_loop_chained(
    url: str, first: str, body: Any, second: str, concurrency: int, duration_s: float,
    progress: Progress | None = None,
) -> Run:
    """A client that calls two models one after the other itself: each of
    ``concurrency`` callers posts ``body`` to ``first``, then the first
    answer's predictions (as the rows) to ``second``; one latency per pair."""
    host, port, raw = post(url, first, body)
    run = Run()
    conns = [Connection(host, port) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + duration_s
    cpu0 = time.process_time()

    async def caller(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status, reply = await conn.request(raw)
                if status == 200:
                    rows = json.loads(reply)["predictions"]
                    _, _, raw2 = post(url, second, {"inputs": rows, "wait": 30})
                    status, reply = await conn.request(raw2)
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                run.errors += 1
                conn.close()
                continue
            run.statuses[status] = run.statuses.get(status, 0) + 1
            if status == 200:
                run.latencies_ms.append((time.perf_counter() - t0) * 1000)
            else:
                run.errors += 1
            if progress is not None:
                progress.update(time.perf_counter() - started, f"{run.ok} ok")

    await asyncio.gather(*(caller(c) for c in conns))
    return _finished(run, conns, started, cpu0, progress)


async def closed_loop_spread(
    urls: list[str], path: str, body: Any, concurrency: int, duration_s: float,
    progress: Progress | None = None,
) -> Run:
    """``closed_loop`` with its callers dealt over ``urls`` in turn (several
    API processes behind one client, as behind a load balancer): one Run."""
    shares = [concurrency // len(urls) + (i < concurrency % len(urls)) for i in range(len(urls))]
    cpu0 = time.process_time()
    started = time.perf_counter()
    runs = await asyncio.gather(*(
        closed_loop(url, path, body, n, duration_s=duration_s, progress=progress if i == 0 else None)
        for i, (url, n) in enumerate(zip(urls, shares, strict=True)) if n))
    merged = Run(wall_s=time.perf_counter() - started, client_cpu_s=time.process_time() - cpu0)
    for run in runs:
        merged.latencies_ms += run.latencies_ms
        merged.errors += run.errors
        for status, n in run.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + n
    return merged


async def open_loop(
    url: str,
    path: str,
    body: Any,
    rate: float,
    duration_s: float,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
) -> Run:
    """A request every 1/``rate`` seconds for ``duration_s``, each on a free
    connection, whether or not earlier ones have been answered."""
    host, port, raw = post(url, path, body)
    run = Run()
    idle: list[Connection] = []
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = time.process_time()
    started = time.perf_counter()

    async def one() -> None:
        conn = idle.pop() if idle else Connection(host, port)
        if await run.send(conn, raw):
            idle.append(conn)

    n = 0
    while True:
        due = started + n / rate
        now = time.perf_counter()
        if now - started >= duration_s or (stop is not None and stop()):
            break
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        if progress is not None:
            progress.update(time.perf_counter() - started, f"{run.ok} ok")
    if tasks:
        await asyncio.gather(*tasks)
    return _finished(run, idle, started, cpu0, progress)
