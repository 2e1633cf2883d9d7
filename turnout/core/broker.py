"""What a failing broker is failing at, in words an operator can act on.

redis-py reports a full broker, a broker that cannot write its disk, a
certificate that does not verify and a closed port all as ``RedisError``
subclasses whose text may run to a whole pipeline's commands. The API's 503s,
the workers' and the commands' start-up checks say the cause instead, and
never the URL's password (only ``RedisSettings.redacted`` is ever shown).
"""

from __future__ import annotations

import re
import ssl

import redis

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
    if isinstance(exc, redis.TimeoutError):
        return "the broker did not answer in time"
    if isinstance(exc, redis.ConnectionError | OSError):
        # redis-py's text names the address and the socket's error, no secret.
        return f"the broker is unreachable ({text[:200]})"
    return f"the broker failed: {text[:200]}"


def check(settings: RedisSettings, timeout_s: float = 5.0) -> None:
    """Ping the broker once; a ``BrokerUnavailable`` that says why if it cannot."""
    client = redis.Redis.from_url(settings.url, socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s)
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
