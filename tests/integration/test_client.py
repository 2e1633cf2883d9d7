"""turnout.client against real stacks: predict, submit and poll, a batch with
progress, the catalogue, typed errors, and retries that honour Retry-After
while a queue is held full."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_digits, load_iris

from tests.integration.conftest import Stack
from tests.support.procs import REPO, Cluster, wait_for
from turnout.client import (
    AsyncClient,
    Client,
    InvalidInput,
    NotFound,
    TaskFailed,
    Unreachable,
)
from turnout.core.settings import RedisSettings

pytestmark = pytest.mark.integration

IRIS = load_iris().data.tolist()
DIGIT = load_digits().data[0].tolist()


def test_predict_submit_poll_and_batch(stack: Stack) -> None:
    with Client(stack.url, api_key="") as turnout:
        body = turnout.predict("iris", IRIS[:3], wait=10)
        assert body["status"] == "SUCCESS" and len(body["predictions"]) == 3
        assert body["version"] == "1"

        task = turnout.submit("iris", IRIS[:2])
        assert task.submitted["status"] == "PENDING"
        done = task.result(timeout=20)
        assert done["task_id"] == task.id and done["predictions"][0] == "setosa"

        job = turnout.batch("iris", IRIS, chunk_rows=40, progress=True, timeout=60)
        assert job["status"] == "SUCCESS" and job["rows_done"] == len(IRIS)
        assert job["predictions"][:1] == ["setosa"] and len(job["predictions"]) == 150

        names = {m["name"] for m in turnout.models()}
        assert {"iris", "digits-cnn", "minilm"} <= names
        assert {w["name"] for w in turnout.workers()} >= {"cpu@test", "gpu-cpu@test"}

        # Never retried: the answer is typed and comes at once.
        started = time.monotonic()
        with pytest.raises(NotFound) as missing:
            turnout.predict("no-such-model", [[1, 2, 3, 4]])
        assert missing.value.kind == "UnknownModel" and turnout.last_waits == []
        with pytest.raises(InvalidInput) as bad:
            turnout.predict("iris", [[1, 2, 3]])
        assert "expected 4 numbers" in bad.value.detail and bad.value.status == 422
        assert time.monotonic() - started < 5

        # A task that fails is an error of its own, carrying the task's body.
        with pytest.raises(TaskFailed) as failed:
            turnout.predict("digits-batched", [[777] + [0] * 63], wait=20)
        assert failed.value.view["status"] == "FAILURE"


def test_the_async_client(stack: Stack) -> None:
    async def run() -> tuple[list[dict], dict]:
        async with AsyncClient(stack.url, api_key="") as turnout:
            many = await asyncio.gather(*(turnout.predict("iris", [row], wait=10)
                                          for row in IRIS[:20]))
            task = await turnout.submit("digits-cnn", [DIGIT])
            return many, await task.result(timeout=20)

    many, digit = asyncio.run(run())
    assert [m["predictions"][0] for m in many] == ["setosa"] * 20
    assert digit["predictions"] == [0]


def test_an_unreachable_api_is_retried_until_the_deadline() -> None:
    started = time.monotonic()
    with Client("http://127.0.0.1:9", api_key="", retry_for_s=1.5) as turnout:
        with pytest.raises(Unreachable):
            turnout.models()
        assert len(turnout.last_waits) >= 2  # it did retry
    assert time.monotonic() - started < 5


@pytest.fixture(scope="module")
def held(redis_server: RedisSettings, models_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    own = RedisSettings(redis_server.host, redis_server.port, db=7, password=redis_server.password)
    cluster = Cluster(own, models_dir, REPO / "tests/support/routes-full.yaml",
                      tmp_path_factory.mktemp("held"))
    cluster.client.flushdb()
    try:
        cluster.worker("gpu", "gpu-held@test", "--device", "cpu")
        _, url = cluster.api()
        yield url
    finally:
        cluster.client.flushdb()
        cluster.stop()


def test_retry_after_is_honoured_while_the_queue_is_full(held: str) -> None:
    raw = httpx.Client(base_url=held, timeout=30)
    # One job runs (1 s), the next waits in the queue: at max_depth 1, full.
    first = raw.post("/v1/models/slow-digits/predict", json={"inputs": [DIGIT]})
    assert first.status_code == 202
    wait_for(lambda: raw.get("/v1/workers").json()["workers"][0]["busy"] == 1, 10, "job running")
    second = raw.post("/v1/models/slow-digits/predict", json={"inputs": [DIGIT]})
    assert second.status_code == 202
    full = wait_for(lambda: (r := raw.post("/v1/models/slow-digits/predict",
                                          json={"inputs": [DIGIT]})).status_code == 429 and r,
                    5, "a 429")
    assert full.headers["Retry-After"] == "1"

    with Client(held, api_key="", retry_for_s=30) as turnout:
        started = time.monotonic()
        body = turnout.predict("slow-digits", [DIGIT], wait=30)
        took = time.monotonic() - started
    assert body["status"] == "SUCCESS" and body["predictions"] == [0]
    # It was told to come back in 1 s, and did, more than once if need be.
    assert turnout.last_waits and all(w == 1.0 for w in turnout.last_waits)
    assert took >= sum(turnout.last_waits)
    raw.close()


def test_turnout_status_shows_the_cluster(stack: Stack) -> None:
    env = {**stack.cluster.env, "TURNOUT_URL": stack.url, "COLUMNS": "200"}
    as_json = subprocess.run([sys.executable, "-m", "turnout", "status", "--json"], env=env,
                             cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(as_json.stdout)
    assert {w["name"] for w in data["workers"]} >= {"cpu@test", "gpu-cpu@test"}
    assert {q["name"] for q in data["queues"]} >= {"cpu", "gpu"}
    iris = next(m for m in data["models"] if m["name"] == "iris")
    assert iris["available"] and iris["serving_queue"] == "cpu"
    orphan = next(m for m in data["models"] if m["name"] == "digits-orphan")
    assert not orphan["available"]
    screen = subprocess.run([sys.executable, "-m", "turnout", "status"], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True).stdout
    for heading in ("workers", "queues", "GPUs", "models", "cpu@test", "gpu-cpu@test",
                    "no live worker"):
        assert heading in screen, (heading, screen)
