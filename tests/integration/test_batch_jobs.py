"""Batch jobs: many rows split into chunks across workers, with progress, all
predictions in order at the end, and a failed chunk named."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

DIGITS = load_digits()


def test_thousands_of_rows_come_back_in_order(http: httpx.Client, models_dir: Path) -> None:
    rows = np.tile(load_iris().data, (20, 1))  # 3,000 rows
    r = http.post("/v1/models/iris/batch", json={"inputs": rows.tolist()})
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["status"], job["rows"], job["chunks"]) == ("PENDING", 3000, 12)  # 256 rows each
    assert r.headers["location"] == job["status_url"] == f"/v1/batches/{job['batch_id']}"
    done = wait_for(lambda: (b := http.get(job["status_url"]).json())["status"] == "SUCCESS" and b, 60, "the batch")
    assert (done["rows_done"], done["rows_failed"]) == (3000, 0)
    model = joblib.load(models_dir / "iris" / "1" / "model.joblib")
    assert done["predictions"] == model.predict(rows).tolist()
    np.testing.assert_allclose(done["probabilities"], model.predict_proba(rows), rtol=1e-9)


def test_progress_is_reported_and_a_failed_chunk_is_named(http: httpx.Client) -> None:
    rows = np.tile(DIGITS.data[:32], (10, 1)).tolist()  # 320 rows, 10 chunks of 32
    rows[100] = [777.0] + rows[100][1:]  # chunk 3 (rows 96-127) fails
    job = http.post("/v1/models/digits-batched/batch", json={"inputs": rows, "chunk_rows": 32}).json()
    assert job["chunks"] == 10
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = http.get(job["status_url"]).json()
        seen.append(view["rows_done"])
        if view["status"] in ("SUCCESS", "FAILURE"):
            break
        assert "predictions" not in view  # only once every chunk is done
        time.sleep(0.1)
    assert seen == sorted(seen) and any(0 < n < 320 for n in seen), seen
    assert view["status"] == "FAILURE"
    assert (view["rows_done"], view["rows_failed"]) == (320, 32)
    assert view["error"] == (
        "1 of 10 chunks failed; first: chunk 3 (rows 96-127): "
        "ValueError: a row starts with 777, which this model cannot take"
    )
    assert [c["chunk"] for c in view["failed_chunks"]] == [3]
    expected = np.tile(DIGITS.target[:32], 10).tolist()
    for i, label in enumerate(view["predictions"]):
        assert label == (None if 96 <= i < 128 else expected[i])


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/models/iris/batch", {"inputs": [[1, 2, 3, 4]] * 5 + [[1, 2, "x", 4]]}, 422, "inputs[5][2]: expected a number, got 'x'"),
        ("/v1/models/iris/batch", {"inputs": [[1, 2, 3, 4]], "chunk_rows": 0}, 422, "chunk_rows: expected a whole number from 1 to 1000, got 0"),
        ("/v1/models/iris/batch", {"inputs": [[1, 2, 3, 4]], "wait": 3}, 422, "body: unknown key 'wait'; expected 'inputs' and optionally 'chunk_rows', 'priority'"),
        ("/v1/models/nope/batch", {"inputs": [[1]]}, 404, "unknown model 'nope'"),
    ],
)
def test_bad_batches_are_refused_with_a_reason(http: httpx.Client, path: str, body: dict[str, object], status: int, message: str) -> None:
    r = http.post(path, json=body)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_unknown_batch_ids_are_404(http: httpx.Client) -> None:
    assert http.get("/v1/batches/not-a-uuid").status_code == 404
    r = http.get("/v1/batches/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 404 and "never issued" in r.json()["detail"]


def test_a_queued_batch_job_does_not_hold_up_interactive_requests(http: httpx.Client) -> None:
    """Batch chunks wait in the queue's low lane and predict requests in its
    normal lane: with hundreds of chunks queued ahead of it, an interactive
    request is answered while the batch job is still running, and the batch
    job then finishes with every row."""
    rows = np.tile(load_iris().data, (200, 1)).tolist()  # 30,000 rows
    job = http.post("/v1/models/iris/batch", json={"inputs": rows, "chunk_rows": 40}).json()
    assert job["chunks"] == 750
    answered = []
    for _ in range(5):
        r = http.post("/v1/models/iris/predict", json={"inputs": [rows[0]], "wait": 30})
        assert r.status_code == 200 and r.json()["status"] == "SUCCESS", r.text
        answered.append(http.get(job["status_url"]).json()["rows_done"])
    # Every interactive answer came while the batch job still had rows to do.
    assert max(answered) < 30_000, answered
    lanes = {q["name"]: q["lanes"] for q in http.get("/v1/queues").json()["queues"]}
    assert set(lanes["cpu"]) == {"high", "normal", "low"}
    done = wait_for(lambda: (b := http.get(job["status_url"]).json())["status"] == "SUCCESS" and b,
                    120, "the batch")
    assert done["rows_done"] == 30_000 and done["priority"] == "low"


def test_a_request_may_ask_for_a_lane_and_a_bad_one_is_named(http: httpx.Client) -> None:
    r = http.post("/v1/models/iris/predict",
                  json={"inputs": [[5.1, 3.5, 1.4, 0.2]], "wait": 10, "priority": "high"})
    assert r.status_code == 200, r.text
    r = http.post("/v1/models/iris/batch", json={"inputs": [[5.1, 3.5, 1.4, 0.2]],
                                                 "priority": "urgent"})
    assert r.status_code == 422
    assert "priority: expected one of 'high', 'normal', 'low', got 'urgent'" in r.json()["detail"]


def test_chunks_are_sized_to_run_for_a_bounded_time(http: httpx.Client) -> None:
    """digits-batched takes 0.3 s a task of up to 32 rows: once its workers
    have reported that, a batch job's default chunks hold the rows that run
    in about TURNOUT_CHUNK_TARGET_S (0.2 s), not its 32."""
    rows = np.tile(DIGITS.data[:32], (2, 1)).tolist()
    first = http.post("/v1/models/digits-batched/batch", json={"inputs": rows, "chunk_rows": 32})
    wait_for(lambda: http.get(first.json()["status_url"]).json()["status"] == "SUCCESS", 60,
             "the first batch")
    time.sleep(1.0)  # the API's next look at what the queues drained
    job = http.post("/v1/models/digits-batched/batch",
                    json={"inputs": np.tile(DIGITS.data[:30], (7, 1)).tolist()}).json()
    view = http.get(job["status_url"]).json()
    assert 15 <= view["chunk_rows"] <= 22, view  # 0.2 s at ~9.4 ms a row
    assert job["chunks"] == -(-210 // view["chunk_rows"])
    done = wait_for(lambda: (b := http.get(job["status_url"]).json())["status"] == "SUCCESS" and b,
                    60, "the batch")
    assert done["rows_done"] == 210
