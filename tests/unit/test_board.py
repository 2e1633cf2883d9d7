"""The shared board where pool children post their state for the heartbeat."""

from __future__ import annotations

import json
import os

from turnout.workers.board import SLOT_BYTES, Board


def test_children_post_and_the_parent_reads_across_fork() -> None:
    board = Board(2)
    pid = os.fork()
    if pid == 0:  # the child: claim a slot, post, exit
        slot = board.claim()
        slot.post(ready=True, models=["iris"], current={"task_id": "t1"})
        os._exit(0)
    # Our own slot, posted while the child's pid is still alive.
    mine = board.claim()
    mine.post(ready=False)
    os.waitpid(pid, 0)
    # The child has exited: its slot no longer counts, and is free again.
    docs = board.read()
    assert [d["pid"] for d in docs] == [os.getpid()]
    assert board.ready() == 0
    mine.post(ready=True, models=["digits-cnn"])
    assert board.ready() == 1
    again = board.claim()  # takes the dead child's slot
    assert again.index != mine.index


def test_an_oversized_post_keeps_what_routing_needs() -> None:
    board = Board(1)
    slot = board.claim()
    slot.post(ready=True, models=["a"], refused={"b": "x" * (SLOT_BYTES * 2)})
    doc = board.read()[0]
    assert doc["ready"] and doc["models"] == ["a"] and doc["truncated"]
    assert len(json.dumps(doc)) < SLOT_BYTES
