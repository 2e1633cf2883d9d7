"""Predictions over HTTP against real workers: the sync (wait) and async paths."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from tests.integration.conftest import Stack
from tests.support.metrics import sample
from tests.support.procs import poll_task

pytestmark = pytest.mark.integration


def test_iris_over_http_equals_the_artifact_loaded_directly(stack: Stack) -> None:
    rows = load_iris().data[::7].tolist()  # 22 rows across the three classes
    model = joblib.load(stack.models_dir / "iris" / "1" / "model.joblib")
    expected = model.predict(np.asarray(rows)).tolist()
    expected_proba = model.predict_proba(np.asarray(rows))

    r = stack.http.post("/v1/models/iris/predict", json={"inputs": rows, "wait": 20})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS"
    assert body["predictions"] == expected
    assert len(set(expected)) == 3
    np.testing.assert_allclose(body["probabilities"], expected_proba, rtol=1e-9)
    assert body["model"] == "iris" and body["queue"] == "cpu"
    assert body["worker"] == "cpu@test" and body["device"] == "cpu"
    timings = body["timings_ms"]
    assert set(timings) == {"queued", "run", "total"}
    assert 0 <= timings["run"] <= timings["total"]


def test_digits_cnn_is_served_by_the_gpu_worker_on_the_cpu(stack: Stack) -> None:
    digits = load_digits()
    rows = digits.data[:40].tolist()

    r = stack.http.post("/v1/models/digits-cnn/predict", json={"inputs": rows, "wait": 20})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queue"] == "gpu"
    assert body["worker"] == "gpu-cpu@test"
    assert body["device"] == "cpu"
    accuracy = np.mean(np.asarray(body["predictions"]) == digits.target[:40])
    assert accuracy >= 0.95
    assert len(body["probabilities"]) == 40
    assert all(abs(sum(p) - 1) < 1e-4 for p in body["probabilities"])


def test_async_path_answers_202_then_the_result_by_polling(stack: Stack) -> None:
    r = stack.http.post("/v1/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})

    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "PENDING"
    assert body["model"] == "iris" and body["queue"] == "cpu"
    assert body["status_url"] == f"/v1/tasks/{body['task_id']}"
    assert r.headers["location"] == body["status_url"]

    done = poll_task(stack.http, body["task_id"], {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    assert done["predictions"] == ["setosa"]
    assert stack.http.get(body["status_url"]).json() == done


def test_wait_too_short_answers_202_and_the_task_still_finishes(stack: Stack) -> None:
    rows = load_digits().data[:5].tolist()
    r = stack.http.post("/v1/models/slow-digits/predict", json={"inputs": rows, "wait": 0.2})

    assert r.status_code == 202, r.text
    done = poll_task(stack.http, r.json()["task_id"], {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS"
    assert done["predictions"] == load_digits().target[:5].tolist()


def test_gpu_route_without_live_gpu_worker_goes_to_its_fallback(stack: Stack) -> None:
    rows = load_digits().data[:3].tolist()
    r = stack.http.post("/v1/models/digits-spill/predict", json={"inputs": rows, "wait": 20})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queue"] == "cpu"
    assert body["worker"] == "cpu@test"


def test_gpu_route_without_worker_or_fallback_is_503_naming_the_route(stack: Stack) -> None:
    rows = load_digits().data[:1].tolist()
    r = stack.http.post("/v1/models/digits-orphan/predict", json={"inputs": rows})

    assert r.status_code == 503
    detail = r.json()["detail"]
    assert "digits-orphan" in detail and "gpu.3" in detail and "no fallback" in detail


def test_catalogue_lists_models_with_live_availability(stack: Stack) -> None:
    models = {m["name"]: m for m in stack.http.get("/v1/models").json()["models"]}

    assert models["iris"]["framework"] == "sklearn"
    assert models["iris"]["input"] == {"kind": "tabular", "width": 4}
    assert models["iris"]["available"] is True
    assert models["digits-cnn"]["serving_queue"] == "gpu"
    assert models["digits-spill"]["serving_queue"] == "cpu"
    assert models["digits-orphan"]["available"] is False


def test_workers_and_queues_are_reported(stack: Stack) -> None:
    workers = {w["name"]: w for w in stack.http.get("/v1/workers").json()["workers"]}
    assert workers["gpu-cpu@test"]["device"] == "cpu"
    assert workers["gpu-cpu@test"]["queues"] == ["gpu"]
    assert workers["cpu@test"]["queues"] == ["cpu"]
    assert "iris" in workers["cpu@test"]["models"]

    queues = {q["name"]: q for q in stack.http.get("/v1/queues").json()["queues"]}
    assert queues["cpu"]["workers"] == 1 and queues["gpu"]["workers"] == 1
    assert queues["gpu.3"]["workers"] == 0


def test_health_readiness_and_metrics(stack: Stack) -> None:
    assert stack.http.get("/healthz").json() == {"status": "ok"}
    ready = stack.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["broker"] == "ok"
    stack.http.post("/v1/models/iris/predict", json={"inputs": [[1, 2, 3, 4]], "wait": 10})
    text = stack.http.get("/metrics").text
    assert (sample(text, "turnout_predict_requests_total", model="iris", code="200") or 0) >= 1
    assert sample(text, "turnout_queue_workers", queue="cpu") == 1
