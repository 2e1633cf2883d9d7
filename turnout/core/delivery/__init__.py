"""Deliveries owned by live workers: who holds which message, who may ack it,
who may write its result, and how a dead worker's messages come back.

kombu's Redis transport keeps a delivered message in the ``unacked`` hash (by
delivery tag) until it is acked; the only way back for a message whose worker
died is the visibility timeout. Turnout adds an owner to each delivery:

- every worker start is a new *incarnation* (``name#random``), registered in
  ``turnout:incarnations`` with a beat counter that its parent's heartbeat
  increments;
- ``append`` (kombu's ``QoS.append``, in ``turnout.core.transport``) writes the
  unacked entry, the owner (``owners[tag] = incarnation\\ttask_id``), the
  incarnation's ``held`` set and the task's lease (``leases[task_id] =
  incarnation\\ttag``) in one Lua call, and only while the incarnation is
  registered: a reaped incarnation gets nothing more;
- ack and reject remove a delivery only while its owner asks;
- a reaper (``Reaper``) that sees an incarnation's beat counter stand still
  for ``dead_after_s`` on its *own* monotonic clock gives that incarnation's
  deliveries back to the head of their queues, each with a new delivery tag
  (kombu keeps a message's tag across restores; a fresh one tells the two
  deliveries apart), marked redelivered, in one transaction;
- a task's start and its result are written only while the lease names the
  writer's incarnation, and only the first result of a task is kept
  (``store``): a worker that wakes up after its jobs were given away writes
  nothing, and a second result is dropped and counted.

Nothing here connects at import time; callers pass their clients in.
"""

from turnout.core.delivery.ownership import (
    HOP_FINAL,
    HOP_JOIN,
    HOP_NEXT,
    JOIN_HEADER,
    ack,
    ack_joined_call,
    append,
    beat,
    claim,
    give_back,
    hop_call,
    join_call,
    join_key,
    new_incarnation,
    register,
    restored,
    retire,
    start_call,
    stats,
)
from turnout.core.delivery.reaper import Reaper, ReaperThread
from turnout.core.delivery.scripts import Call, Scripts
from turnout.core.redis_keys import (
    INCARNATIONS,
    LEASES,
    LEDGER,
    OWNERS,
    STATS,
    UNACKED,
    UNACKED_INDEX,
    bell,
    done,
    held,
    joined,
)

__all__ = [
    "HOP_FINAL", "HOP_JOIN", "HOP_NEXT", "INCARNATIONS", "JOIN_HEADER", "LEASES", "LEDGER", "OWNERS", "STATS", "UNACKED", "UNACKED_INDEX",
    "Call", "Reaper", "ReaperThread", "Scripts", "ack", "ack_joined_call", "append", "beat", "bell", "claim", "done",
    "give_back", "held", "hop_call", "join_call", "join_key", "joined", "new_incarnation", "register", "restored", "retire", "start_call", "stats",
]
