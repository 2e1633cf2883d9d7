"""Micro-batching in the router: concurrent requests for one model, bound for
one queue, go to the worker as one task that runs one batched forward pass.

When to send a batch is the whole design:

- at once, when a worker that serves the model has a free slot (nothing of
  ours in flight beyond the route's live capacity): a lone request never
  waits for company, so batching costs nothing at low load;
- otherwise the batch fills while the workers are busy, and goes when it
  holds ``max_batch`` rows, when ``max_delay_ms`` has passed since its first
  request, or as soon as one of our batches in flight finishes, whichever
  comes first.

Under prefetch 1 this is what keeps a GPU busy: while it runs one batch the
next one gathers here, not one request per Celery task. A route without
``max_batch`` sends every request as a batch of one.

Each request keeps its own id; the batch takes the id of its first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from turnout.router.results import ResultWatcher


class Batchable(Protocol):
    """What a batch is for: a route, or a pipeline's batching settings."""

    @property
    def name(self) -> str: ...
    @property
    def max_batch(self) -> int | None: ...
    @property
    def max_delay_ms(self) -> float | None: ...
    @property
    def time_limit_s(self) -> float: ...

# A batch whose result never came (its worker and the message were lost) stops
# counting as in flight after its time limit times this, plus a margin.
_INFLIGHT_GRACE = 2.0


@dataclass
class Job:
    """One client request."""

    id: str
    rows: list[Any]
    submitted_at: float
    batch_id: str = ""
    index: int = 0
    # The API key's name that made it (None when the API is open).
    owner: str | None = None
    # When it must have started by, on Redis's clock (None: no deadline).
    deadline: float | None = None


@dataclass
class Batch:
    id: str
    route: Batchable
    queue: str
    # The model version the batch runs on; ``pinned``: that version or none.
    version: str = ""
    pinned: bool = False
    # The priority lane it waits in.
    lane: str = "normal"
    jobs: list[Job] = field(default_factory=list)
    rows: int = 0
    # Resolved once the batch is queued in Redis (or failed to be).
    sent: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.TimerHandle | None = None


Publish = Callable[[Batch], Awaitable[None]]
Key = tuple[str, str, str, bool, str]
Capacity = Callable[[str, str], int]


class Batcher:
    def __init__(self, publish: Publish, capacity: Capacity, watcher: ResultWatcher,
                 gather: bool = True) -> None:
        self._publish = publish
        # False: every request goes at once as a task of its own (the workers
        # may still batch them: worker-side batching).
        self._gather = gather
        self._capacity = capacity
        self._watcher = watcher
        # Keyed by (model, queue, version, pinned, lane): a batch runs on one
        # version and waits in one lane.
        self._open: dict[Key, Batch] = {}
        # key -> batch id -> (when to stop counting it, its result's future)
        self._inflight: dict[Key, dict[str, tuple[float, asyncio.Future[Any]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Per model, for /metrics: requests per batch is what batching buys.
        self.sent_batches: Counter[str] = Counter()
        self.sent_jobs: Counter[str] = Counter()

    def add(
        self, route: Batchable, queue: str, job: Job, version: str = "", pinned: bool = False,
        lane: str = "normal",
    ) -> Batch:
        """Put ``job`` in the open batch for its route, queue and version
        (opening one if needed) and send that batch if it is time. Never
        blocks: the send runs as a task, so the caller can start watching the
        batch's result first."""
        key = (route.name, queue, version, pinned, lane)
        limit = (route.max_batch or 1) if self._gather else 1
        batch = self._open.get(key)
        if batch is not None and batch.rows + len(job.rows) > limit:
            self._flush(key)
            batch = None
        if batch is None:
            batch = Batch(id=job.id, route=route, queue=queue, version=version, pinned=pinned,
                          lane=lane)
            self._open[key] = batch
        job.batch_id, job.index = batch.id, len(batch.jobs)
        batch.jobs.append(job)
        batch.rows += len(job.rows)
        if batch.rows >= limit or self._has_room(key):
            self._flush(key)
        elif batch.timer is None:
            delay = (route.max_delay_ms or 0.0) / 1000
            batch.timer = asyncio.get_running_loop().call_later(delay, self._flush_if, key, batch)
        return batch

    def _has_room(self, key: Key) -> bool:
        # In flight counts per version, capacity per model: close enough, and a
        # canary's few batches never starve the default's.
        return len(self._prune(key)) < max(1, self._capacity(key[0], key[1]))

    def _prune(self, key: Key) -> dict[str, tuple[float, asyncio.Future[Any]]]:
        flying = self._inflight.setdefault(key, {})
        if flying:
            now = time.monotonic()
            for batch_id, (deadline, future) in list(flying.items()):
                if now > deadline:
                    del flying[batch_id]
                    future.cancel()
        return flying

    def _flush_if(self, key: Key, batch: Batch) -> None:
        if self._open.get(key) is batch:
            self._flush(key)

    def _flush(self, key: Key) -> None:
        batch = self._open.pop(key)
        if batch.timer is not None:
            batch.timer.cancel()
        done = self._watcher.on_ready(batch.id)
        deadline = time.monotonic() + batch.route.time_limit_s * _INFLIGHT_GRACE + 5
        self._inflight.setdefault(key, {})[batch.id] = (deadline, done)
        done.add_done_callback(lambda _: self._finished(key, batch.id))
        task = asyncio.get_running_loop().create_task(self._send(batch, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: Batch, done: asyncio.Future[Any]) -> None:
        try:
            await self._publish(batch)
        except BaseException as exc:
            done.cancel()
            if not batch.sent.done():
                batch.sent.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.sent_batches[batch.route.name] += 1
        self.sent_jobs[batch.route.name] += len(batch.jobs)
        batch.sent.set_result(None)

    def _finished(self, key: Key, batch_id: str) -> None:
        self._inflight.get(key, {}).pop(batch_id, None)
        # A slot is free: what gathered meanwhile goes now, not at its deadline.
        if key in self._open:
            self._flush(key)

    async def close(self) -> None:
        for key in list(self._open):
            self._flush(key)
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
