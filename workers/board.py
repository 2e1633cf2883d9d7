"""Where a worker's pool children tell its parent what they are doing.

The parent publishes the heartbeat, but the children load the models and run
the tasks (the parent never imports torch). Each child posts a small JSON
document into its own slot of a shared-memory board created before the fork:
its models, the ones it refused, its device's UUID, its current task and its
memory figures. Posting is a lock and a memcpy, cheap enough to do per task.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

SLOT_BYTES = 8192


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Slot:
    def __init__(self, board: Board, index: int) -> None:
        self._board = board
        self.index = index
        self.doc: dict[str, Any] = {"pid": os.getpid()}

    def post(self, **fields: Any) -> None:
        """Merge ``fields`` into this child's document and publish it."""
        self.doc.update(fields)
        self._board.write(self.index, self.doc)


class Board:
    def __init__(self, slots: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._slots = slots
        self._lock = ctx.Lock()
        self._buf = ctx.RawArray("c", slots * SLOT_BYTES)

    def claim(self) -> Slot:
        """A slot for the calling child: a free one, or one whose child died
        (the pool replaces children that exit or are killed)."""
        with self._lock:
            for index, doc in enumerate(self._read_all()):
                if doc is None or not _alive(int(doc.get("pid", 0))):
                    slot = Slot(self, index)
                    self._write(index, slot.doc)
                    return slot
        raise RuntimeError(f"all {self._slots} board slots are held by live children")

    def write(self, index: int, doc: dict[str, Any]) -> None:
        with self._lock:
            self._write(index, doc)

    def read(self) -> list[dict[str, Any]]:
        """The documents of the children that are alive now."""
        with self._lock:
            docs = self._read_all()
        return [d for d in docs if d is not None and _alive(int(d.get("pid", 0)))]

    def ready(self) -> int:
        """How many live children have loaded their models."""
        return sum(1 for d in self.read() if d.get("ready"))

    def _write(self, index: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        if len(data) >= SLOT_BYTES:
            # Never overflow the slot: keep what routing needs, drop the detail.
            keep = {k: doc[k] for k in ("pid", "ready", "models") if k in doc}
            data = json.dumps({**keep, "truncated": True}, separators=(",", ":")).encode()
            if len(data) >= SLOT_BYTES:
                data = json.dumps({"pid": doc.get("pid", 0), "ready": doc.get("ready", False),
                                   "truncated": True}).encode()
        start = index * SLOT_BYTES
        self._buf[start : start + len(data)] = data
        self._buf[start + len(data)] = b"\0"

    def _read_all(self) -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = []
        for index in range(self._slots):
            start = index * SLOT_BYTES
            raw = bytes(self._buf[start : start + SLOT_BYTES]).split(b"\0", 1)[0]
            out.append(json.loads(raw) if raw else None)
        return out
