"""Your own models on a running stack: every format added with one command,
answering over HTTP as it does in process, with its schema inferred; bad rows
named; a second version that waits for promotion; pickles refused without
trust; uploads over HTTP; archives that escape refused; still served after
the stack restarts."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_redis
from tests.support.own_models import MAKERS, PEOPLE, Made, skops_pipeline
from tests.support.procs import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

ROUTES = "models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: cpu\n" \
         "    input: {kind: tabular, width: 4}\n"


@dataclass
class Own:
    cluster: Cluster
    http: httpx.Client
    models: Path
    made: dict[str, Made]

    def turnout(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "turnout", *args], check=False, cwd=REPO,
                              env=self.cluster.env, capture_output=True, text=True, timeout=300)

    def add(self, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        made = self.made[name]
        return self.turnout("models", "add", name, str(made.path), *made.args, *extra)

    def predict(self, name: str, rows: list[Any], path: str = "predict") -> httpx.Response:
        return self.http.post(f"/v1/models/{name}/{path}", json={"inputs": rows, "wait": 30})

    def ensure(self, name: str) -> None:
        """``name`` added (by this test or an earlier one) and serving."""
        listed = {m["name"] for m in self.http.get("/v1/models").json()["models"]}
        if name not in listed:
            done = self.add(name)
            assert done.returncode == 0, done.stderr + done.stdout
        self.serving(name)

    def serving(self, name: str) -> None:
        def ready() -> bool:
            listed = {m["name"]: m for m in self.http.get("/v1/models").json()["models"]}
            return name in listed and listed[name]["available"]

        wait_for(ready, 60, f"model {name} to serve")


def start(own_tmp: Path, models: Path, server: Any) -> tuple[Cluster, httpx.Client]:
    cluster = Cluster(server.settings, models, own_tmp / "routes.yaml", own_tmp,
                      extra_env={"TURNOUT_LIFECYCLE_POLL_S": "0.2"})
    cluster.worker("cpu", "cpu@own", "--concurrency", "1")
    _, url = cluster.api()
    http = httpx.Client(base_url=url, timeout=60)
    wait_for(lambda: len(http.get("/v1/workers").json()["workers"]) == 1, 30, "the worker")
    return cluster, http


@pytest.fixture(scope="module")
def own(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    tmp = tmp_path_factory.mktemp("own")
    models = tmp / "models"
    shutil.copytree(models_dir / "iris" / "1", models / "iris" / "1")
    (tmp / "routes.yaml").write_text(ROUTES)
    sources = tmp / "sources"
    sources.mkdir()
    made = {name: maker(sources) for name, maker in MAKERS.items()}
    server = start_redis(tmp / "redis")
    cluster, http = start(tmp, models, server)
    state = Own(cluster, http, models, made)
    try:
        yield state
    finally:
        state.http.close()
        state.cluster.stop()
        server.stop()


@pytest.mark.parametrize("name", list(MAKERS))
def test_each_format_is_added_with_one_command_and_answers_as_in_process(
    own: Own, name: str
) -> None:
    made = own.made[name]
    done = own.add(name)
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"added {name} v1 ({made.format}" in done.stdout
    own.serving(name)
    r = own.predict(name, made.rows)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == "1"
    got = body[made.compare]
    assert got is not None and len(got) == len(made.expected)
    for row, want in zip(got, made.expected, strict=True):
        if made.pick is not None:
            assert made.pick(row) == want
        else:
            assert row == pytest.approx(want, abs=1e-5)
    described = own.http.get(f"/v1/models/{name}").json()
    version = described["versions"][0]
    assert version["format"] == made.format
    assert version["input"]["kind"] in ("columns", "tabular", "tensor", "text", "image")
    listed = {m["name"]: m for m in own.http.get("/v1/models").json()["models"]}
    assert listed[name]["input"] == version["input"]


def test_a_pipeline_over_named_columns_infers_their_types(own: Own) -> None:
    own.serving("people-skops")
    schema = own.http.get("/v1/models/people-skops").json()["versions"][0]["input"]
    types = {c["name"]: c["type"] for c in schema["columns"]}
    assert types == {"age": "number", "income": "number", "city": "string"}
    # The MLflow signature says age is a long: a whole number.
    own.serving("people-mlflow")
    schema = own.http.get("/v1/models/people-mlflow").json()["versions"][0]["input"]
    assert {c["name"]: c["type"] for c in schema["columns"]}["age"] == "integer"


@pytest.mark.parametrize(("row", "named"), [
    ({"age": 31, "income": 52.5}, "column 'city' (string) is missing"),
    ({**PEOPLE[0], "zip": "75001"}, "unknown column 'zip'"),
    ({**PEOPLE[0], "income": "lots"}, "inputs[0].income: expected a number"),
    ({**PEOPLE[0], "city": None}, "inputs[0].city: null"),
    ([31, 52.5, "Paris"], "expected an object of columns"),
])
def test_bad_rows_get_422_naming_the_column(own: Own, row: Any, named: str) -> None:
    own.serving("people-skops")
    r = own.predict("people-skops", [row])
    assert r.status_code == 422 and named in r.json()["detail"], r.text


def test_a_float_never_becomes_an_integer_but_an_integer_widens(own: Own) -> None:
    own.serving("people-mlflow")
    r = own.predict("people-mlflow", [{**PEOPLE[0], "age": 31.5}])
    assert r.status_code == 422 and "inputs[0].age: expected a whole number" in r.json()["detail"]
    r = own.predict("people-mlflow", [{**PEOPLE[0], "income": 52}])
    assert r.status_code == 200, r.text


def test_a_tensor_of_the_wrong_shape_is_named(own: Own) -> None:
    own.serving("linear-onnx")
    r = own.predict("linear-onnx", [[1.0, 2.0, 3.0]])
    assert r.status_code == 422 and "expected 4 entries" in r.json()["detail"], r.text


def test_a_second_add_is_a_version_that_serves_only_once_promoted(own: Own) -> None:
    own.serving("people-skops")
    done = own.add("people-skops")
    assert done.returncode == 0, done.stderr
    assert "serves once promoted: turnout models promote people-skops 2" in done.stdout
    body = own.http.get("/v1/models/people-skops").json()
    assert body["default_version"] == "1" and [v["version"] for v in body["versions"]] == ["1", "2"]
    assert own.predict("people-skops", PEOPLE[:1]).json()["version"] == "1"
    refused = own.turnout("models", "remove", "people-skops", "1")
    assert refused.returncode != 0 and "serves" in refused.stderr
    r = own.http.put("/v1/models/people-skops/default", json={"version": "2"}, timeout=120)
    assert r.status_code == 200, r.text
    assert own.predict("people-skops", PEOPLE[:1]).json()["version"] == "2"
    removed = own.turnout("models", "remove", "people-skops", "1")
    assert removed.returncode == 0, removed.stderr
    assert not (own.models / "people-skops" / "1").exists()


def test_a_pickle_without_trust_is_refused_and_leaves_nothing(own: Own) -> None:
    made = own.made["people-joblib"]
    done = own.turnout("models", "add", "untrusted-pickle", str(made.path))
    assert done.returncode != 0
    assert "is a pickle" in done.stderr and "--trust-pickle" in done.stderr
    assert not (own.models / "untrusted-pickle").exists()


def test_an_add_that_fails_leaves_nothing_behind(own: Own, tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"not a graph")
    done = own.turnout("models", "add", "junk", str(junk))
    assert done.returncode != 0 and "junk" in done.stderr
    assert not (own.models / "junk").exists()
    unknown = tmp_path / "model.bin"
    unknown.write_bytes(b"\x00" * 10)
    done = own.turnout("models", "add", "junk", str(unknown))
    assert done.returncode != 0 and "unknown model format" in done.stderr


def test_verify_rehashes_every_file(own: Own) -> None:
    own.serving("iris-lgb")
    ok = own.turnout("models", "verify", "iris-lgb")
    assert ok.returncode == 0 and "iris-lgb v1: ok" in ok.stdout
    shown = own.turnout("models", "show", "iris-lgb")
    assert shown.returncode == 0 and "lightgbm" in shown.stdout


def test_an_upload_over_http_adds_a_model(own: Own, tmp_path: Path) -> None:
    made = skops_pipeline(tmp_path)
    # The server trusts no skops type beyond the defaults, whatever the upload says.
    with made.path.open("rb") as fh:
        r = own.http.post("/v1/models/uploaded/versions", files={"file": ("p.skops", fh)})
    assert made.args, "the pipeline holds a type skops does not trust by default (numpy.dtype)"
    assert r.status_code == 422 and "--trust-type" in r.json()["detail"], r.text
    assert "numpy.dtype" in r.json()["detail"]
    # An ONNX graph needs no trust: it is added and serves.
    onnx = own.made["linear-onnx"]
    with onnx.path.open("rb") as fh:
        r = own.http.post("/v1/models/uploaded/versions", files={"file": ("m.onnx", fh)},
                          data={"sample": json.dumps({"inputs": onnx.rows[:1]})})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == "1" and body["format"] == "onnx" and body["serving"] is True
    own.serving("uploaded")
    got = own.predict("uploaded", onnx.rows).json()["predictions"]
    for row, want in zip(got, onnx.expected, strict=True):
        assert row == pytest.approx(want, abs=1e-5)


def test_an_uploaded_pickle_is_403_while_the_server_does_not_trust_pickles(own: Own) -> None:
    made = own.made["people-joblib"]
    with made.path.open("rb") as fh:
        r = own.http.post("/v1/models/pickled/versions", files={"file": ("m.joblib", fh)})
    assert r.status_code == 403, r.text
    assert "is a pickle" in r.json()["detail"] and "TURNOUT_TRUST_PICKLE" in r.json()["detail"]
    assert not (own.models / "pickled").exists()


def test_an_uploaded_folder_as_an_archive(own: Own, tmp_path: Path) -> None:
    made = own.made["tiny-bert"]
    archive = tmp_path / "bert.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(made.path, arcname="tiny-bert")
    with archive.open("rb") as fh:
        r = own.http.post("/v1/models/bert-upload/versions", files={"file": ("bert.tar.gz", fh)})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "huggingface"


def test_an_archive_that_escapes_its_folder_is_refused(own: Own, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"x"
        info = tarfile.TarInfo("../../escaped.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with archive.open("rb") as fh:
        r = own.http.post("/v1/models/evil/versions", files={"file": ("evil.tar.gz", fh)})
    assert r.status_code == 422, r.text
    assert "'../../escaped.onnx' is outside its folder" in r.json()["detail"]
    assert not (own.models.parent / "escaped.onnx").exists()
    link = tmp_path / "link.tar.gz"
    with tarfile.open(link, "w:gz") as tar:
        info = tarfile.TarInfo("model/weights.onnx")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with link.open("rb") as fh:
        r = own.http.post("/v1/models/evil/versions", files={"file": ("link.tar.gz", fh)})
    assert r.status_code == 422 and "is a link" in r.json()["detail"], r.text


def test_uploads_need_an_admin_sized_body_and_a_file(own: Own) -> None:
    r = own.http.post("/v1/models/x/versions", json={"file": "nope"})
    assert r.status_code == 400, r.text
    r = own.http.post("/v1/models/x/versions", files={"other": ("a", b"b")})
    assert r.status_code == 422 and "unknown field 'other'" in r.json()["detail"], r.text


def test_added_models_still_serve_after_the_stack_restarts(own: Own) -> None:
    for name in ("iris-xgb", "net-export"):
        own.serving(name)
    own.http.close()
    own.cluster.stop()
    own.cluster, own.http = start(own.cluster.tmp, own.models,
                                  type("S", (), {"settings": own.cluster.redis_settings})())
    for name in ("iris-xgb", "net-export", "people-skops"):
        own.serving(name)
        made = own.made[name]
        r = own.predict(name, made.rows)
        assert r.status_code == 200, r.text


# name -> (the v2 inputs it takes, what to compare: output name)
V2_CASES = {
    "linear-onnx": ([{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "scores"),
    "people-skops": ([{"name": "age", "datatype": "FP64", "shape": [-1]},
                      {"name": "income", "datatype": "FP64", "shape": [-1]},
                      {"name": "city", "datatype": "BYTES", "shape": [-1]}], "probabilities"),
    "tiny-bert": ([{"name": "text", "datatype": "BYTES", "shape": [-1]}], "probabilities"),
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("name", list(V2_CASES))
def test_v2_infer_with_tritonclient_on_added_models(own: Own, name: str, binary: bool) -> None:
    """A tensor (ONNX), a named-column pipeline (one input per column, as
    MLServer's pandas content type) and a text model (BYTES), through the
    real tritonclient: its answers are v1's and the model's own."""
    httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed")
    import numpy as np

    own.ensure(name)
    made = own.made[name]
    inputs, compared = V2_CASES[name]
    client = httpclient.InferenceServerClient(str(own.http.base_url).removeprefix("http://"))
    try:
        meta = client.get_model_metadata(name)
        assert meta["inputs"] == inputs
        assert compared in {o["name"] for o in meta["outputs"]}
        sent = []
        for spec in inputs:
            if spec["datatype"] == "BYTES":
                values = [row[spec["name"]] if isinstance(row, dict) else row for row in made.rows]
                array = np.asarray([v.encode() for v in values], dtype=np.object_)
            elif isinstance(made.rows[0], dict):
                array = np.asarray([row[spec["name"]] for row in made.rows], dtype=np.float64)
            else:
                array = np.asarray(made.rows, dtype=np.float32)
            tensor = httpclient.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array, binary_data=binary)
            sent.append(tensor)
        result = client.infer(name, sent, outputs=[
            httpclient.InferRequestedOutput(compared, binary_data=binary)])
        got = result.as_numpy(compared)
    finally:
        client.close()
    v1 = own.predict(name, made.rows).json()
    np.testing.assert_allclose(got, v1[made.compare], atol=1e-6)
    np.testing.assert_allclose(got, made.expected, atol=1e-5)
