"""Connecting to the broker, and what a failing broker is failing at, in
words an operator can act on.

``connect`` and ``connect_async`` are the one way a process of Turnout's
opens a client on the broker: a plain or TLS Redis from its URL, or, for a
``sentinel://`` URL, the primary the Sentinels name (asked again after a
failover: redis-py's Sentinel pools reconnect to the new primary).

redis-py reports a full broker, a broker that cannot write its disk, a
certificate that does not verify and a closed port all as ``RedisError``
subclasses whose text may run to a whole pipeline's commands. The API's 503s,
the workers' and the commands' start-up checks say the cause instead, and
never the URL's password (only ``RedisSettings.redacted`` is ever shown).
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import MasterNotFoundError, Sentinel

from turnout.core import lua
from turnout.core.errors import BrokerUnavailable
from turnout.core.settings import RedisSettings

# redis-py names a pipeline's failed command, with its arguments, before
# Redis's own words; the arguments may be a request's data.
_PIPELINE = re.compile(r"Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def refuses_writes(exc: BaseException) -> bool:
    """The broker answers but refuses writes for now (out of memory, a disk
    it cannot write, a replica): nothing to do but wait, and nothing to kill."""
    text = str(exc)
    return isinstance(exc, redis.ResponseError) and (
        isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in text
        or "MISCONF" in text or "READONLY" in text or "Errors writing to the AOF" in text
        or "NOREPLICAS" in text)


def why(exc: BaseException) -> str:
    """The cause of a broker failure, short."""
    text = _PIPELINE.sub("", str(exc))
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in text \
            or "used memory > 'maxmemory'" in text:
        return ("the broker is out of memory (its maxmemory is reached and it refuses writes "
                "until memory is freed or maxmemory raised)")
    if "MISCONF" in text or "Errors writing to the AOF file" in text:
        return ("the broker cannot write to its disk (its persistence is failing, e.g. the disk "
                "is full) and refuses writes until it can")
    if "NOREPLICAS" in text:
        return ("the broker has too few replicas in sync to accept writes "
                "(its min-replicas-to-write)")
    if "READONLY" in text:
        return "the broker is a read-only replica (a failover in progress, or the wrong address)"
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return ("TLS: the broker's certificate does not verify against the trusted CA "
                "(the URL's ssl_ca_certs, or the system's CAs without it); refusing to connect")
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "TLS: the broker does not speak TLS on this port (use redis:// for a plain port)"
    if isinstance(exc, redis.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return "the broker refused the credentials in TURNOUT_BROKER_URL"
    if "Connection reset by peer" in text:
        return ("the broker closed the connection at once (does it speak TLS on this port? "
                "then the URL must be rediss://)")
    if "No master found" in text or isinstance(exc, MasterNotFoundError):
        return ("no Sentinel names a primary for the URL's master_name (the Sentinels are "
                "unreachable, or a failover is in progress)")
    if isinstance(exc, redis.TimeoutError):
        return "the broker did not answer in time"
    if isinstance(exc, redis.ConnectionError | OSError):
        # redis-py's text names the address and the socket's error, no secret.
        return f"the broker is unreachable ({text[:200]})"
    return f"the broker failed: {text[:200]}"


def _load_scripts(connection: Any) -> None:
    """On every new connection, before anything else is sent on it: Redis's
    own handshake, then every Turnout script loaded (idempotent, one round
    trip). A server that lost its script cache (a restart, or a replica
    promoted by a failover: scripts are not replicated) would otherwise
    answer NOSCRIPT to some calls of a pipeline and run the others, and a
    rider's ack that ran where its store did not would fence that store."""
    connection.on_connect()
    sources = [lua.source(name) for name in lua.names()]
    connection.send_packed_command(connection.pack_commands(
        [("SCRIPT", "LOAD", text) for text in sources]))
    for _ in sources:  # every reply read, so that none is left for the next command
        try:
            connection.read_response()
        except redis.ResponseError:
            pass  # that one loads on first use instead (redis-py's Script)


def connect(settings: RedisSettings, **options: Any) -> redis.Redis:
    """A client on the broker (``options``: redis-py's, e.g. socket_timeout);
    each of its connections loads Turnout's scripts first."""
    options.setdefault("redis_connect_func", _load_scripts)
    if settings.sentinels:
        sentinel = Sentinel(list(settings.sentinels), **_sentinel_options(options))
        return sentinel.master_for(settings.master_name or "", db=settings.db,
                                   username=settings.username, password=settings.password,
                                   **options)
    return redis.Redis.from_url(settings.url, **options)


def connect_async(settings: RedisSettings, **options: Any) -> aioredis.Redis:
    """``connect`` for asyncio."""
    if settings.sentinels:
        sentinel = AsyncSentinel(list(settings.sentinels), **_sentinel_options(options))
        return sentinel.master_for(settings.master_name or "", db=settings.db,
                                   username=settings.username, password=settings.password,
                                   **options)
    return aioredis.Redis.from_url(settings.url, **options)


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    """How the Sentinels themselves are asked: with the same time limits."""
    limits: dict[str, Any] = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")
                              if k in options}
    return {"sentinel_kwargs": limits, **limits}


def check(settings: RedisSettings, timeout_s: float = 5.0) -> None:
    """Ping the broker once; a ``BrokerUnavailable`` that says why if it cannot."""
    client = connect(settings, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if refuses_writes(exc):
            # Reachable, and refusing even PING while it cannot write its
            # disk: what starts now waits for it (see workers.run).
            return
        raise BrokerUnavailable(f"broker {settings.redacted}: {why(exc)}") from None
    finally:
        client.close()
