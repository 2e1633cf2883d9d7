"""Micro-batching: concurrent requests share one task and one forward pass,
and each still gets its own id, its own result in its own order, and its own
failure."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from tests.integration.conftest import Stack
from tests.support.metrics import sample
from tests.support.procs import poll_task
from turnout.core import redis_keys

pytestmark = pytest.mark.integration

DIGITS = load_digits()


def _post_all(url: str, model: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: client.post(f"/v1/models/{model}/predict", json=b), bodies))


def test_concurrent_requests_share_tasks_and_keep_their_own_results(stack: Stack) -> None:
    # 24 requests of 1 to 3 rows each, all different, sent at once.
    spans = [(i * 3, i * 3 + 1 + i % 3) for i in range(24)]
    bodies = [{"inputs": DIGITS.data[a:b].tolist(), "wait": 30} for a, b in spans]
    responses = _post_all(stack.url, "digits-batched", bodies)
    views = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert len({v["task_id"] for v in views}) == 24
    for (a, b), view in zip(spans, views, strict=True):
        assert view["status"] == "SUCCESS"
        assert view["predictions"] == DIGITS.target[a:b].tolist()  # its own rows, in order
        assert len(view["probabilities"]) == b - a
    # They went as fewer tasks than requests: some views say they shared one.
    sizes = [v.get("batch_size", 1) for v in views]
    assert max(sizes) > 1 and sum(1 / s for s in sizes) < 24
    # Each id answers GET with the same result, and shares a task with others.
    for view in views[:6]:
        again = stack.http.get(f"/v1/tasks/{view['task_id']}").json()
        assert again["status"] == "SUCCESS" and again["predictions"] == view["predictions"]
    records = [json.loads(stack.cluster.client.get(redis_keys.task(v["task_id"]))) for v in views]
    assert len({r["batch"] for r in records}) < 24
    # /metrics counts it too: more requests than tasks for this model.
    text = stack.http.get("/metrics").text
    tasks = sample(text, "turnout_batches_total", model="digits-batched") or 0
    requests = sample(text, "turnout_batched_requests_total", model="digits-batched") or 0
    assert 0 < tasks < requests


def test_a_bad_request_fails_alone_in_its_batch(stack: Stack) -> None:
    rows = DIGITS.data[:12].tolist()
    bodies = [{"inputs": [row], "wait": 30} for row in rows]
    bodies[5] = {"inputs": [[777.0] + rows[5][1:]], "wait": 30}
    views = [r.json() for r in _post_all(stack.url, "digits-batched", bodies)]
    assert views[5]["status"] == "FAILURE"
    assert views[5]["error"] == "ValueError: a row starts with 777, which this model cannot take"
    for i, view in enumerate(views):
        if i != 5:
            assert view["status"] == "SUCCESS", view
            assert view["predictions"] == [int(DIGITS.target[i])]
    failed = stack.http.get(f"/v1/tasks/{views[5]['task_id']}").json()
    assert failed["status"] == "FAILURE" and "777" in failed["error"]


def test_without_wait_each_request_gets_its_own_202_and_id(stack: Stack) -> None:
    bodies = [{"inputs": [row]} for row in DIGITS.data[:8].tolist()]
    responses = _post_all(stack.url, "digits-batched", bodies)
    assert all(r.status_code == 202 for r in responses)
    ids = [r.json()["task_id"] for r in responses]
    assert len(set(ids)) == 8
    done = [poll_task(stack.http, i, {"SUCCESS", "FAILURE"}) for i in ids]
    assert [d["predictions"][0] for d in done] == DIGITS.target[:8].tolist()


def test_iris_on_the_cpu_queue_batches_too_and_matches_the_model(stack: Stack, models_dir: Path) -> None:
    model = joblib.load(models_dir / "iris" / "1" / "model.joblib")
    data = load_iris().data
    bodies = [{"inputs": data[i : i + 2].tolist(), "wait": 30} for i in range(0, 120, 2)]
    views = [r.json() for r in _post_all(stack.url, "iris", bodies)]
    for i, view in zip(range(0, 120, 2), views, strict=True):
        assert view["status"] == "SUCCESS" and view["queue"] == "cpu"
        assert view["predictions"] == model.predict(data[i : i + 2]).tolist()
        np.testing.assert_allclose(view["probabilities"], model.predict_proba(data[i : i + 2]), rtol=1e-9)
