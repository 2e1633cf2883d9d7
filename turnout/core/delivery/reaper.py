"""Declaring silent workers dead, on this process's own clock, and giving
their deliveries back."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from turnout.core.broker import connect
from turnout.core.delivery.ownership import give_back
from turnout.core.redis_keys import INCARNATIONS
from turnout.core.settings import RedisSettings

log = logging.getLogger("turnout.core.delivery")

# The errors Redis answers while it refuses writes (maxmemory reached, its
# disk failing, too few replicas), as INFO errorstats counts them. Not ERR:
# routine (redis-py's CLIENT SETINFO on a Redis before 7.2 is one per new
# connection), it would grace every death. Redis 6.2 counts a write refused
# inside a script (a worker's beat) as ERR, so there only the refused plain
# writes (a submit's transaction) are seen; Redis 7 counts both.
REFUSALS = ("errorstat_OOM", "errorstat_MISCONF", "errorstat_NOREPLICAS")


@dataclass
class Reaper:
    """Declares incarnations dead and gives their deliveries back.

    Death is judged by this process's monotonic clock alone: an incarnation is
    dead once its beat counter has not moved for ``dead_after_s`` *as seen
    from here*, over an unbroken watch; no timestamp written by another host
    is compared with ours. When this process cannot read Redis, or has itself
    not looked for a while (it was frozen, starved, or busy), its observations
    start over: time it did not watch never counts as a worker's silence.

    A broker that refuses writes (full, its disk failing) stops every beat
    too, and that silence is the broker's, not the workers'. A refused
    give-back starts the watch over; and before declaring anyone dead, the
    reaper asks Redis how many writes it has refused (``INFO errorstats``):
    if that moved since it last asked, the silence may span a refusal that
    ended a moment ago, before the workers' next beats could land, and the
    watch starts over instead, once per silence. It asks only when about to
    declare a death, so a steady cluster pays nothing; the grace costs a
    real death at most one extra ``dead_after_s``.

    Any number of reapers may run at once (each API process, ``turnout up``,
    each worker): each give-back is one transaction (``give_back``).
    """

    client: redis.Redis
    dead_after_s: float
    name: str = "reaper"
    clock: Any = time.monotonic
    # A gap longer than this between two looks breaks the watch (default:
    # half of dead_after_s).
    max_gap_s: float | None = None
    _seen: dict[str, tuple[Any, float]] = field(default_factory=dict)
    _last_look: float | None = None
    _refused: int | None = None  # Redis's count of refused writes, when last asked
    # Incarnations given their one grace in their current silence.
    _graced: set[str] = field(default_factory=set)

    def _refusals(self) -> int:
        stats = self.client.info("errorstats")
        return sum(int((stats.get(key) or {}).get("count", 0)) for key in REFUSALS)

    def _refused_since_asked(self) -> bool:
        """Whether Redis refused writes since this reaper last asked."""
        count, before = self._refusals(), self._refused
        self._refused = count
        return before is not None and count != before

    def forget(self) -> None:
        """Start the watch over (this process could not look)."""
        self._seen.clear()
        self._last_look = None

    def tick(self) -> list[tuple[str, int]]:
        """One look: returns the incarnations reaped now, with how many
        deliveries each gave back."""
        try:
            counters = self.client.hgetall(INCARNATIONS)
        except redis.RedisError:
            self.forget()
            raise
        if self._refused is None:
            self._refused = self._refusals()  # the count to compare with, from the start
        now = self.clock()
        gap = self.max_gap_s if self.max_gap_s is not None else self.dead_after_s / 2
        if self._last_look is not None and now - self._last_look > gap:
            self._seen.clear()
        self._last_look = now
        reaped: list[tuple[str, int]] = []
        asked = False
        current = {
            (k.decode() if isinstance(k, bytes) else k): v for k, v in counters.items()
        }
        for incarnation in list(self._seen):
            if incarnation not in current:
                del self._seen[incarnation]
        self._graced &= set(current)
        for incarnation, counter in current.items():
            seen = self._seen.get(incarnation)
            if seen is None or seen[0] != counter:
                if seen is not None:
                    self._graced.discard(incarnation)  # it beat: its silence is over
                self._seen[incarnation] = (counter, now)
                continue
            if now - seen[1] < self.dead_after_s:
                continue
            if incarnation not in self._graced and not asked:
                asked = True
                if self._refused_since_asked():
                    log.warning("%s: the broker refused writes during the silence of %s; "
                                "watching every worker afresh", self.name, incarnation)
                    self._graced.add(incarnation)
                    self.forget()
                    return reaped
            try:
                moved = give_back(self.client, incarnation, why="reaped")
            except redis.RedisError:
                # A broker that refuses writes (full, or its disk) stops
                # every beat too: that silence is the broker's, not the
                # workers'. The watch starts over once it writes again,
                # and so does the count of refusals to compare with.
                self.forget()
                self._refused = None
                raise
            del self._seen[incarnation]
            reaped.append((incarnation, moved))
            log.warning(
                "%s: worker %s silent for %.1f s: declared dead; %d job(s) given back",
                self.name, incarnation, now - seen[1], moved,
            )
        return reaped


class ReaperThread:
    """A ``Reaper`` looking every ``interval_s`` on a thread of its own, so a
    busy event loop or a long forward pass never delays it."""

    def __init__(self, where: RedisSettings, dead_after_s: float, interval_s: float,
                 name: str) -> None:
        self.where = where
        self.dead_after_s = dead_after_s
        self.interval_s = interval_s
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"turnout-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        client = connect(self.where, socket_timeout=5, socket_connect_timeout=5)
        reaper = Reaper(client, self.dead_after_s, name=self.name)
        failing = False
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    reaper.tick()
                    failing = False
                except redis.RedisError as exc:
                    if not failing:  # once per outage, not once per tick
                        log.warning("%s: cannot reach Redis (%s); retrying", self.name, exc)
                    failing = True
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
