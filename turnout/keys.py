"""Names of the Redis keys Turnout writes, in one place (Celery's own keys aside)."""

from __future__ import annotations

PREFIX = "turnout"
WORKERS = f"{PREFIX}:workers"  # sorted set: worker name -> last heartbeat (unix s)
# Celery's Redis result backend stores each result under this key and publishes
# it on a channel of the same name.
CELERY_RESULT_PREFIX = "celery-task-meta-"


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
