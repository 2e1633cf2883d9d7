"""Every kind of bad request gets its status and a message naming the problem."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Stack
from tests.support.metrics import sample

pytestmark = pytest.mark.integration

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize(
    ("model", "body", "status", "message"),
    [
        ("iris", {"inputs": [ROW, [1, 2, 3]]}, 422, "inputs[1]: expected 4 numbers for model 'iris', got 3"),
        ("iris", {"inputs": [[1, 2, "x", 4]]}, 422, "inputs[0][2]: expected a number, got 'x'"),
        ("iris", {"inputs": [[1, 2, True, 4]]}, 422, "inputs[0][2]: expected a number, got True"),
        ("iris", {"inputs": [ROW, 7]}, 422, "inputs[1]: expected a list of 4 numbers, got 7"),
        ("iris", {"inputs": []}, 422, "inputs: no rows given"),
        ("iris", {"inputs": [ROW] * 1001}, 422, "inputs: 1001 rows, but model 'iris' takes at most 1000"),
        ("iris", {"inputs": "5.1,3.5"}, 422, "inputs: expected a list of rows, got str"),
        ("iris", {"rows": [ROW]}, 422, "unknown key 'rows'"),
        ("iris", {}, 422, "'inputs' is missing"),
        ("iris", [ROW], 422, "expected a JSON object"),
        ("iris", {"inputs": [ROW], "wait": -1}, 422, "wait: expected a number of seconds from 0"),
        ("iris", {"inputs": [ROW], "wait": 3600}, 422, "wait: at most 60 seconds"),
        ("iris", {"inputs": [ROW], "wait": "soon"}, 422, "wait: expected a number of seconds"),
        ("no-such-model", {"inputs": [ROW]}, 404, "unknown model 'no-such-model'; known models: "),
    ],
)
def test_bad_requests(stack: Stack, model: str, body: object, status: int, message: str) -> None:
    r = stack.http.post(f"/v1/models/{model}/predict", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"inputs": [[5.1, 3.5, NaN, 0.2]]}', "inputs[0][2]: expected a finite number, got nan"),
        (b'{"inputs": [[5.1, Infinity, 1.4, 0.2]]}', "inputs[0][1]: expected a finite number, got inf"),
        (b'{"inputs": [[5.1, 3.5, 1.4, -1e999]]}', "inputs[0][3]: expected a finite number, got -inf"),
        (b'{"inputs": [[5.1, 3.5, 1.4, 1' + b"0" * 400 + b"]]}", "inputs[0][3]: the number is too large"),
        (b'{"inputs": [[5.1, 3.5', "body: not valid JSON"),
        (b"\xff\xfe", "body: not valid JSON"),
    ],
)
def test_non_finite_and_malformed_bodies(stack: Stack, raw: bytes, message: str) -> None:
    r = stack.http.post(
        "/v1/models/iris/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


def _payload_errors(stack: Stack) -> float:
    text = stack.http.get("/metrics").text
    return sample(text, "turnout_errors_total", code="413", error="PayloadTooLarge") or 0


def test_body_over_the_limit_is_413_before_it_is_read(stack: Stack) -> None:
    big = json.dumps({"inputs": [ROW] * 60_000}).encode()  # about 1.4 MB, limit 1 MiB
    before = _payload_errors(stack)
    for path in ("/v1/models/iris/predict", "/v1/models/iris/versions/1/predict", "/v1/models"):
        r = stack.http.post(path, content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413
        # The error contract, as every other error answer: the class, the body, counted once.
        assert r.headers["x-turnout-error"] == "PayloadTooLarge"
        assert r.json() == {"detail": "request body too large: 1320012 bytes, the limit is 1048576"}
    assert _payload_errors(stack) == before + 3


def test_chunked_body_over_the_limit_is_413(stack: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(60_000):  # about 1.26 MB, limit 1 MiB
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    r = stack.http.post("/v1/models/iris/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "request body too large" in r.json()["detail"]


def test_unknown_task_ids_are_404(stack: Stack) -> None:
    never_issued = str(uuid.uuid4())
    r = stack.http.get(f"/v1/tasks/{never_issued}")
    assert r.status_code == 404
    assert "never issued" in r.json()["detail"]
    assert stack.http.get("/v1/tasks/not-a-uuid").status_code == 404
    assert stack.http.delete(f"/v1/tasks/{never_issued}").status_code == 404


def test_a_finished_task_cannot_be_revoked(stack: Stack) -> None:
    done = stack.http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10}).json()
    assert done["status"] == "SUCCESS"
    r = stack.http.delete(f"/v1/tasks/{done['task_id']}")
    assert r.status_code == 409
    assert "already finished (SUCCESS)" in r.json()["detail"]
