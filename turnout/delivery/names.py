"""The Redis keys of owned deliveries, and incarnation names."""

from __future__ import annotations

import secrets

from turnout import keys

# kombu's own key names (Channel.unacked_key, unacked_index_key).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

INCARNATIONS = f"{keys.PREFIX}:incarnations"  # hash: incarnation -> beat counter
OWNERS = f"{keys.PREFIX}:owners"  # hash: delivery tag -> "incarnation\ttask_id"
LEASES = f"{keys.PREFIX}:leases"  # hash: task id -> "incarnation\tdelivery tag"
STATS = f"{keys.PREFIX}:delivery-stats"  # hash of counters
LEDGER = f"{keys.PREFIX}:ledger"  # list of JSON run records (when the ledger is on)


def bell(queue: str) -> str:
    """One token per message pushed onto ``queue``: what idle workers block
    on (BRPOP), so that the message itself is only ever taken by ``claim``."""
    return f"{keys.PREFIX}:bell:{queue}"


def held(incarnation: str) -> str:
    """The delivery tags an incarnation holds (a set)."""
    return f"{keys.PREFIX}:held:{incarnation}"


def done(task_id: str) -> str:
    """Set once, by the first result written for a task."""
    return f"{keys.PREFIX}:done:{task_id}"


def new_incarnation(name: str) -> str:
    return f"{name}#{secrets.token_hex(6)}"
