"""The transaction that queues a job, and what "accepted" means.

By default a job is accepted once the primary has it: with asynchronous
replication, a failover in the next moment can lose it (Redis acknowledges
before its replicas have the write). With ``TURNOUT_BROKER_REPLICAS`` = n, the
job's transaction is followed on the same connection by Redis's ``WAIT n``,
and the API answers 202 only once n replicas have it; a job the replicas
do not confirm in ``TURNOUT_BROKER_REPLICA_TIMEOUT_MS`` is answered 503
``NotReplicated``: it *is* queued, and a retry with the same Idempotency-Key
gets that very task (the claim is kept), never a second one.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from turnout.core.errors import NotReplicated
from turnout.core.settings import Settings


class _Replicated(Pipeline):
    """A transaction followed, on its own connection and before that
    connection goes back to the pool, by WAIT (which counts the writes of
    the connection it is sent on, and only those)."""

    replicas = 0
    timeout_ms = 0
    acked = 0

    async def _execute_transaction(self, connection: Any, commands: Any,
                                   raise_on_error: bool) -> Any:
        response = await super()._execute_transaction(connection, commands, raise_on_error)
        await connection.send_command("WAIT", self.replicas, self.timeout_ms)
        self.acked = int(await connection.read_response())
        return response


class Publisher:
    def __init__(self, client: aioredis.Redis, settings: Settings) -> None:
        self.client = client
        self.replicas = settings.broker_replicas
        self.timeout_ms = settings.broker_replica_timeout_ms

    def transaction(self) -> Pipeline:
        if not self.replicas:
            return self.client.pipeline(transaction=True)
        pipe = _Replicated(self.client.connection_pool, self.client.response_callbacks,
                           transaction=True, shard_hint=None)
        pipe.replicas, pipe.timeout_ms = self.replicas, self.timeout_ms
        return pipe

    async def commit(self, pipe: Pipeline) -> None:
        """Send it; ``NotReplicated`` when too few replicas confirmed it."""
        await pipe.execute()
        if isinstance(pipe, _Replicated) and pipe.acked < pipe.replicas:
            raise NotReplicated(
                f"the job is queued, but {pipe.acked} of the {pipe.replicas} replica(s) "
                f"TURNOUT_BROKER_REPLICAS asks for confirmed it within {pipe.timeout_ms} ms; "
                "send it again with the same Idempotency-Key to get this task")
