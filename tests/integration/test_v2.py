"""The Open Inference Protocol (v2) against a running stack, with the real
``tritonclient.http``: server and model metadata, readiness, ``infer`` on a
tabular model (iris) and a text model (minilm, BYTES in), with Triton's
binary data extension on and off; answers equal to v1's and to the model in
process; errors as ``{"error"}`` with v1's status codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
utils = pytest.importorskip("tritonclient.utils")

ROWS = np.asarray([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
                  dtype=np.float32)
TEXTS = ["a cat sat on the mat", "stock markets fell sharply"]


@pytest.fixture(scope="module")
def triton(stack: Stack) -> Any:
    client = httpclient.InferenceServerClient(stack.url.removeprefix("http://"),
                                              network_timeout=60)
    yield client
    client.close()


def _v1(http: httpx.Client, model: str, rows: list[Any]) -> dict[str, Any]:
    r = http.post(f"/v1/models/{model}/predict", json={"inputs": rows, "wait": 30})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_server_metadata_and_health(triton: Any, http: httpx.Client) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "turnout" and "binary_tensor_data" in meta["extensions"]
    assert http.get("/v2/health/live").status_code == 200


def test_model_metadata_comes_from_the_versions_schema(triton: Any) -> None:
    meta = triton.get_model_metadata("iris")
    assert meta["name"] == "iris" and "1" in meta["versions"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "predictions", "datatype": "BYTES", "shape": [-1]},
                               {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]}]
    assert triton.get_model_metadata("iris", "1")["versions"] == ["1"]
    text = triton.get_model_metadata("minilm")
    assert text["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_readiness_says_whether_a_request_would_run(triton: Any) -> None:
    assert triton.is_model_ready("iris") and triton.is_model_ready("iris", "1")
    assert not triton.is_model_ready("digits-orphan")  # no worker consumes its queue


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_a_tabular_model_equals_v1_and_the_model_itself(
        triton: Any, http: httpx.Client, models_dir: Path, binary: bool) -> None:
    sent = httpclient.InferInput("input", list(ROWS.shape), "FP32")
    sent.set_data_from_numpy(ROWS, binary_data=binary)
    asked = [httpclient.InferRequestedOutput(n, binary_data=binary)
             for n in ("predictions", "probabilities")]
    result = triton.infer("iris", [sent], outputs=asked, request_id="r-1")
    answer = result.get_response()
    assert answer["model_name"] == "iris" and answer["model_version"] == "1"
    assert answer["id"] == "r-1"
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("predictions")]
    probabilities = result.as_numpy("probabilities")
    v1 = _v1(http, "iris", ROWS.astype(np.float64).tolist())
    assert labels == v1["predictions"]
    np.testing.assert_allclose(probabilities, v1["probabilities"], atol=1e-12)
    import joblib

    model = joblib.load(models_dir / "iris" / "1" / "model.joblib")
    np.testing.assert_allclose(probabilities, model.predict_proba(ROWS.astype(np.float64)),
                               atol=1e-12)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_on_a_text_model_takes_bytes(triton: Any, http: httpx.Client, binary: bool) -> None:
    sent = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    sent.set_data_from_numpy(np.asarray([t.encode() for t in TEXTS], dtype=np.object_),
                             binary_data=binary)
    result = triton.infer("minilm", [sent],
                          outputs=[httpclient.InferRequestedOutput("predictions",
                                                                   binary_data=binary)])
    vectors = result.as_numpy("predictions")
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, _v1(http, "minilm", TEXTS)["predictions"], atol=1e-6)


def test_a_client_may_leave_datatype_and_shape_out(http: httpx.Client) -> None:
    r = http.post("/v2/models/iris/infer",
                  json={"inputs": [{"name": "input", "data": ROWS.astype(float).tolist()}]})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["predictions"]["shape"] == [3] and out["probabilities"]["shape"] == [3, 3]
    flat = http.post("/v2/models/iris/infer", json={"inputs": [
        {"name": "input", "datatype": "FP64", "data": ROWS.astype(float).ravel().tolist()}]})
    assert flat.status_code == 200 and flat.json()["outputs"] == r.json()["outputs"]


@pytest.mark.parametrize(("body", "status", "said"), [
    ({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1, 4],
                  "data": ["a", "b", "c", "d"]}]}, 422, "input 'input': datatype BYTES, but the model takes FP64"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 5], "data": [1, 2, 3, 4, 5]}]},
     422, "input 'input': shape [1, 5], but the model takes [-1, 4]"),
    ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
     422, "input 'pixels': model 'iris' has no such input"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4], "data": [1, 2, 3, 4]}]},
     422, "shape [2, 4] holds 8 elements, but data has 4"),
    ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
      "outputs": [{"name": "logits"}]}, 422, "output 'logits'"),
])
def test_bad_requests_say_what_is_wrong(http: httpx.Client, body: dict[str, Any], status: int,
                                        said: str) -> None:
    r = http.post("/v2/models/iris/infer", json=body)
    assert r.status_code == status, r.text
    assert said in r.json()["error"]


def test_errors_keep_v1s_status_codes(http: httpx.Client, triton: Any) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    unknown = http.post("/v2/models/nope/infer", json=body)
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert http.post("/v2/models/iris/versions/99/infer", json=body).status_code == 404
    orphan = http.post("/v2/models/digits-orphan/infer", json={"inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64}]})
    assert orphan.status_code == 503 and orphan.json()["error"]
    broken = http.post("/v2/models/iris/infer", content=b"{not json",
                       headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]
    assert http.get("/v2/nothing-here").json() == {"error": "Not Found"}
    with pytest.raises(utils.InferenceServerException, match="datatype BYTES"):
        sent = httpclient.InferInput("input", [1, 4], "BYTES")
        sent.set_data_from_numpy(np.asarray([[b"a", b"b", b"c", b"d"]], dtype=np.object_))
        triton.infer("iris", [sent])


def test_v2_requests_are_counted_as_v1s_are(http: httpx.Client, triton: Any) -> None:
    def served() -> float:
        text = http.get("/metrics").text
        line = next((x for x in text.splitlines()
                     if x.startswith('turnout_predict_requests_total{code="200",model="iris"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before = served()
    sent = httpclient.InferInput("input", [1, 4], "FP32")
    sent.set_data_from_numpy(ROWS[:1])
    triton.infer("iris", [sent])
    assert served() == before + 1
