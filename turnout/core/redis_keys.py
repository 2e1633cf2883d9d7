"""Names of the Redis keys Turnout writes, in one place (Celery's own keys aside)."""

from __future__ import annotations

PREFIX = "turnout"
WORKERS = f"{PREFIX}:workers"  # sorted set: worker name -> last heartbeat (unix s)
# Celery's Redis result backend stores each result under this key and publishes
# it on a channel of the same name.
CELERY_RESULT_PREFIX = "celery-task-meta-"
# kombu's own key names (its Redis Channel's unacked_key, unacked_index_key).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

# Owned deliveries (turnout.core.delivery).
INCARNATIONS = f"{PREFIX}:incarnations"  # hash: incarnation -> beat counter
OWNERS = f"{PREFIX}:owners"  # hash: delivery tag -> "incarnation\ttask_id"
LEASES = f"{PREFIX}:leases"  # hash: task id -> "incarnation\tdelivery tag"
STATS = f"{PREFIX}:delivery-stats"  # hash of counters
LEDGER = f"{PREFIX}:ledger"  # list of JSON run records (when the ledger is on)

# Model lifecycle (turnout.core.serving): which versions serve each model, read by
# every API process and every worker's pool children.
SERVING = f"{PREFIX}:serving"  # hash: model -> JSON serving document
# The route table in force, as last reloaded: {generation, text, source}.
ROUTES = f"{PREFIX}:routes"
# API keys (turnout.core.access): key name -> JSON with the token's hash, never the token.
API_KEYS = f"{PREFIX}:apikeys"
# Set once a key has been made: the API stays closed with no keys left, until
# an operator reopens it (`turnout keys reopen`).
API_KEYS_CLOSED = f"{PREFIX}:apikeys:closed"
# Set (with a TTL, renewed) while a `turnout flower` runs: API processes then
# send Celery's task-sent events.
MONITORING = f"{PREFIX}:monitoring"


def idempotency(owner: str, key: str) -> str:
    """A client's Idempotency-Key, per API key: the task it made."""
    return f"{PREFIX}:idem:{owner}:{key}"


def task(task_id: str) -> str:
    """The router's record of a task it issued: model, queue, submitted_at."""
    return f"{PREFIX}:task:{task_id}"


def batch(job_id: str) -> str:
    """A batch job's record: its model, rows and chunks."""
    return f"{PREFIX}:batch:{job_id}"


def revoked(task_id: str) -> str:
    return f"{PREFIX}:revoked:{task_id}"


def deliveries(task_id: str) -> str:
    """How many times a worker has started this task (redeliveries included)."""
    return f"{PREFIX}:deliveries:{task_id}"


def worker(name: str) -> str:
    """A worker's heartbeat, a JSON document that expires unless renewed."""
    return f"{PREFIX}:worker:{name}"


def result(task_id: str) -> str:
    return f"{CELERY_RESULT_PREFIX}{task_id}"


# Priority lanes, highest first. Every queue has one list per lane: the
# ``normal`` lane is the queue's own list (what kombu itself pushes onto: a
# retry, a chord's callback), the others ``<queue>@high`` and ``<queue>@low``.
# A queue's lanes share one bell.
LANES = ("high", "normal", "low")
DEFAULT_LANE = "normal"
_LANE_SEP = "@"


def lane_named(value: object) -> str:
    """The lane a message's ``turnout_lane`` header names: the default for
    none, or for a name that is not a lane."""
    return value if isinstance(value, str) and value in LANES else DEFAULT_LANE


def lane_key(queue: str, lane: str) -> str:
    """The list of ``queue``'s ``lane``."""
    return queue if lane == DEFAULT_LANE else f"{queue}{_LANE_SEP}{lane}"


def lane_keys(queue: str) -> list[str]:
    """``queue``'s lists, highest lane first."""
    return [lane_key(queue, lane) for lane in LANES]


def queue_of(key: str) -> str:
    """The queue a lane's list belongs to."""
    return key.split(_LANE_SEP, 1)[0]


def lane_of(key: str) -> str:
    return key.split(_LANE_SEP, 1)[1] if _LANE_SEP in key else DEFAULT_LANE


# queue -> tasks drained (and "<queue>:rows", "<queue>:busy_s"), by the workers.
DRAINED = f"{PREFIX}:drained"


def lane_turn(queue: str) -> str:
    """How many messages were claimed from ``queue``: every n-th claim serves
    the lowest waiting lane first (each lane's guaranteed share)."""
    return f"{PREFIX}:lane-turn:{queue}"


def bell(queue: str) -> str:
    """One token per message pushed onto ``queue`` (any of its lanes): what
    idle workers block on (BRPOP), so that the message itself is only ever
    taken by a claim."""
    return f"{PREFIX}:bell:{queue_of(queue)}"


def held(incarnation: str) -> str:
    """The delivery tags an incarnation holds (a set)."""
    return f"{PREFIX}:held:{incarnation}"


def joined(incarnation: str) -> str:
    """Of the tags an incarnation holds, those a pool child took into a
    running task's forward pass (worker-side batching): tag -> that task's
    (the leader's) delivery tag."""
    return f"{PREFIX}:joined:{incarnation}"


def done(task_id: str) -> str:
    """Set once, by the first result written for a task."""
    return f"{PREFIX}:done:{task_id}"


def training(job_id: str) -> str:
    """A training job's record: model, status, progress, trials, version."""
    return f"{PREFIX}:training:{job_id}"


def training_progress(job_id: str) -> str:
    """A hash: trial index -> its progress (JSON); each only ever goes up."""
    return f"{PREFIX}:training-progress:{job_id}"


def training_cancel(job_id: str) -> str:
    """Set when a training job is cancelled; the job looks at it every epoch."""
    return f"{PREFIX}:training-cancel:{job_id}"


def register_lock(model: str) -> str:
    """Held while a new version of ``model`` is given its number."""
    return f"{PREFIX}:register:{model}"


# Pipelines and ensembles (turnout.core.flows, workers/flows.py).


def flow_input(flow_id: str, at: int) -> str:
    """The input of step ``at`` of flow ``flow_id`` (what the step before it
    answered, for every request), written by the hop that queued the step:
    large outputs go by reference, not through the message."""
    return f"{PREFIX}:flow:{flow_id}:{at}"


def flow_join(flow_id: str) -> str:
    """An ensemble's branches' outputs: branch index -> its answer (a hash,
    not a counter: a branch that runs twice writes the same field)."""
    return f"{PREFIX}:flow:{flow_id}:join"


def training_join(job_id: str) -> str:
    """A training search's trials' results: trial index -> its result."""
    return f"{PREFIX}:training-join:{job_id}"
