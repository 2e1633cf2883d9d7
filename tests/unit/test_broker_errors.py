"""A broker failure's cause in words: what the API's 503 and the start-up
checks say (the errors are the ones redis-py raises, their texts Redis's)."""

from __future__ import annotations

import ssl

import pytest
import redis

from turnout.core.broker import check, connect, why
from turnout.core.errors import BrokerUnavailable
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import free_port


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (redis.ResponseError("Command # 2 (SET turnout:task:x {\"rows\": 1}) of pipeline caused "
                             "error: OOM command not allowed when used memory > 'maxmemory'."),
         "out of memory"),
        # redis-py drops the OOM prefix when it picks its own class for it.
        (redis.exceptions.OutOfMemoryError(
            "Command # 1 (SET turnout:task:c35 {\"rows\": 1}...) of pipeline caused error: "
            "command not allowed when used memory > 'maxmemory'."), "out of memory"),
        (redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
         "cannot write to its disk"),
        (redis.ResponseError("READONLY You can't write against a read only replica."),
         "read-only replica"),
        (redis.ConnectionError("Error 1 connecting to 10.0.0.2:6380. [SSL: "
                               "CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
         "does not verify against the trusted CA"),
        (ssl.SSLCertVerificationError("self-signed certificate"), "does not verify"),
        (redis.AuthenticationError("invalid username-password pair"), "refused the credentials"),
        (redis.ConnectionError("Error 111 connecting to 10.0.0.2:6380. Connection refused."),
         "unreachable (Error 111"),
    ],
)
def test_a_broker_failure_says_its_cause(exc: Exception, says: str) -> None:
    assert says in why(exc)
    # A pipeline's failed command is not echoed back (it may carry a request's data).
    assert "turnout:task" not in why(exc)


def test_a_failure_the_broker_owns_no_one_can_fix_is_not_echoed() -> None:
    said = why(redis.ResponseError("Command # 3 (EVALSHA abc 1 turnout:task:x) of pipeline "
                                   "caused error: ERR something new"))
    assert said == "the broker failed: ERR something new"


def test_check_names_the_broker_without_its_password() -> None:
    closed = RedisSettings("127.0.0.1", free_port(), password="s3cret")
    with pytest.raises(BrokerUnavailable) as err:
        check(closed, timeout_s=1)
    assert "unreachable" in str(err.value) and "127.0.0.1" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_every_new_connection_finds_the_scripts_loaded(redis_server: RedisSettings) -> None:
    """A promoted replica or a restarted Redis has no script cache: a fresh
    connection loads them all before its first command, so a pipeline of
    EVALSHAs never half-runs on NOSCRIPT."""
    from turnout.core import lua

    client = connect(redis_server, socket_timeout=5)
    try:
        client.script_flush()
        client.connection_pool.disconnect()  # the next command connects again
        shas = [client.register_script(lua.source(name)).sha for name in lua.names()]
        assert all(client.script_exists(*shas))
    finally:
        client.close()
