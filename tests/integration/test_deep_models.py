"""minilm over HTTP, and out-of-memory splitting, on the GPU worker (on the CPU)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.integration.conftest import Stack
from tests.support.procs import wait_for

pytestmark = pytest.mark.integration

TEXTS = ["Where does this job run?", "On the GPU queue, or its fallback.", "東京 café"]
DIGITS = load_digits()


def test_minilm_vectors_over_http_equal_sentence_transformers(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    r = stack.http.post("/v1/models/minilm/predict", json={"inputs": TEXTS, "wait": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["queue"], body["worker"], body["device"]) == ("SUCCESS", "gpu", "gpu-cpu@test", "cpu")
    got = np.asarray(body["predictions"])
    assert got.shape == (3, 384) and "probabilities" not in body

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(Path(stack.models_dir) / "minilm" / "1"), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(got, reference, atol=1e-5)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["ok"] * 17, "inputs: 17 rows, but model 'minilm' takes at most 16 per request"),
        (["ok", 3], "inputs[1]: expected a string, got 3"),
        (["ok", "   "], "inputs[1]: the string is empty"),
        (["x" * 501], "inputs[0]: 501 characters, but model 'minilm' takes at most 500"),
        ([["a", "b"]], "inputs[0]: expected a string, got ['a', 'b']"),
        ([], "inputs: no rows given"),
    ],
)
def test_bad_text_inputs_get_422_naming_the_problem(http: httpx.Client, inputs: list[object], message: str) -> None:
    r = http.post("/v1/models/minilm/predict", json={"inputs": inputs})
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_an_oversized_batch_is_split_on_out_of_memory_and_keeps_its_order(http: httpx.Client) -> None:
    rows = DIGITS.data[:10].tolist()
    split = http.post("/v1/models/digits-oom/predict", json={"inputs": rows, "wait": 20}).json()
    plain = http.post("/v1/models/digits-cnn/predict", json={"inputs": rows, "wait": 20}).json()
    assert split["status"] == plain["status"] == "SUCCESS"
    assert split["oom_splits"] == 3  # 10 rows -> 5 + 5 -> (3 + 2) + (3 + 2)
    assert split["predictions"] == plain["predictions"] == DIGITS.target[:10].tolist()
    np.testing.assert_allclose(split["probabilities"], plain["probabilities"], atol=1e-6)


def test_a_row_that_never_fits_fails_its_task_and_the_worker_goes_on(http: httpx.Client) -> None:
    def pid() -> int:
        workers = {w["name"]: w for w in http.get("/v1/workers").json()["workers"]}
        return int(workers["gpu-cpu@test"]["children"][0]["pid"])

    before = pid()
    rows = DIGITS.data[:6].tolist()
    rows[3] = [666.0] + rows[3][1:]
    body = http.post("/v1/models/digits-oom/predict", json={"inputs": rows, "wait": 20}).json()
    assert body["status"] == "FAILURE"
    assert body["error"].startswith("DeviceOutOfMemory: model 'digits-oom': 1 of 6 rows did not fit")
    assert "did not fit in device memory: row 3 does not fit even on its own (OutOfMemoryError: CUDA out of memory" in body["error"]
    again = http.post("/v1/models/digits-oom/predict", json={"inputs": rows[:3], "wait": 20}).json()
    assert again["status"] == "SUCCESS" and again["worker"] == "gpu-cpu@test"
    assert pid() == before  # the same pool child, not a replacement


def test_the_gpu_worker_on_the_cpu_reports_its_state_without_nvml(http: httpx.Client) -> None:
    def idle() -> dict[str, dict[str, object]] | None:
        views = {w["name"]: w for w in http.get("/v1/workers").json()["workers"]}
        return views if views["gpu-cpu@test"]["busy"] == 0 else None

    # The last test's job may still show in a heartbeat sent while it ran.
    workers = wait_for(idle, 5, "the GPU worker to be idle")
    gpu = workers["gpu-cpu@test"]
    assert gpu["gpu"] is None and gpu["telemetry"] == "none: the worker runs on the CPU"
    assert {"digits-cnn", "minilm", "digits-oom", "slow-digits"} <= set(gpu["models"])
    assert "digits-placed" not in gpu["models"]  # placed on devices 1 and 2 only
    assert gpu["refused"] == {} and gpu["busy"] == 0 and gpu["current_tasks"] == []
    assert [c["ready"] for c in gpu["children"]] == [True]
    assert workers["cpu@test"]["busy"] == 0 and len(workers["cpu@test"]["children"]) == 2
    assert http.get("/v1/devices").json() == {"devices": []}
