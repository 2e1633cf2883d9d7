"""The client's retry decisions, against httpx's mock transport (the real
stack tests are in tests/integration/test_client.py)."""

from __future__ import annotations

import httpx
import pytest

from turnout.client import Client, Forbidden, InvalidInput, TooManyRequests, Unavailable


def scripted(answers: list[httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle), seen


DONE = {"task_id": "t", "status": "SUCCESS", "predictions": [1]}


def test_retry_after_is_waited_and_the_idempotency_key_kept() -> None:
    transport, seen = scripted([
        httpx.Response(429, json={"detail": "full"}, headers={"Retry-After": "0.05"}),
        httpx.Response(503, json={"detail": "no worker"}),
        httpx.Response(200, json=DONE),
    ])
    with Client("http://t", api_key="k", transport=transport) as client:
        assert client.predict("iris", [[1, 2, 3, 4]])["predictions"] == [1]
        assert client.last_waits[0] == 0.05 and len(client.last_waits) == 2
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(seen) == 3 and len(keys) == 1
    assert seen[0].headers["Authorization"] == "Bearer k"


@pytest.mark.parametrize(("status", "error"), [(422, InvalidInput), (403, Forbidden)])
def test_client_errors_are_never_retried(status: int, error: type[Exception]) -> None:
    transport, seen = scripted([httpx.Response(status, json={"detail": "no"},
                                               headers={"X-Turnout-Error": "Why"})])
    with Client("http://t", api_key="", transport=transport) as client, \
            pytest.raises(error) as raised:
        client.predict("iris", [[1]])
    assert len(seen) == 1 and raised.value.kind == "Why"  # type: ignore[attr-defined]


def test_a_retry_after_past_the_deadline_gives_up_at_once() -> None:
    transport, seen = scripted([httpx.Response(429, json={"detail": "full"},
                                               headers={"Retry-After": "30"})])
    with Client("http://t", api_key="", transport=transport, retry_for_s=1) as client, \
            pytest.raises(TooManyRequests) as raised:
        client.models()
    assert raised.value.retry_after == 30 and len(seen) == 1


def test_unavailable_until_the_deadline() -> None:
    transport, seen = scripted([httpx.Response(503, json={"detail": "down"})] * 100)
    with Client("http://t", api_key="", transport=transport, retry_for_s=0.5) as client, \
            pytest.raises(Unavailable):
        client.workers()
    assert 2 <= len(seen) < 100


def test_several_api_processes_a_dead_one_is_passed_over_at_once() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "a":
            # Killed mid-request: the connection dropped with no answer.
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(200, json=DONE)

    with Client("http://a:8000, http://b:8000/", api_key="", transport=httpx.MockTransport(handle)) \
            as client:
        assert client.predict("iris", [[1, 2, 3, 4]])["predictions"] == [1]
        # No backoff before the second process; the client stays with it.
        assert client.last_waits == [] and client.url == "http://b:8000"
        client.task("t")
    assert [r.url.host for r in seen] == ["a", "b", "b"]
    # The retry is the same request: the same Idempotency-Key.
    assert seen[0].headers["Idempotency-Key"] == seen[1].headers["Idempotency-Key"]


def test_a_call_that_may_not_be_repeated_is_not_sent_to_another_process() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        raise httpx.ReadTimeout("timed out")

    with Client(["http://a", "http://b"], api_key="", transport=httpx.MockTransport(handle)) \
            as client, pytest.raises(Exception, match="no answer from the API at http://a"):
        client.train("iris", "iris.csv")  # a POST with no Idempotency-Key: it may have run
    assert seen == ["a"]


def test_every_process_down_backs_off_between_rounds() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "broker down"})

    with Client(["http://a", "http://b"], api_key="", transport=httpx.MockTransport(handle),
                retry_for_s=0.6) as client, pytest.raises(Unavailable):
        client.models()
    # Each round tries both, then waits once.
    assert client.last_waits
