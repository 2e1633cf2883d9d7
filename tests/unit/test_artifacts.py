"""Artifacts load only from the models folder and only when their sha256 matches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from turnout.core.errors import ArtifactError
from turnout.core.routes import Route, parse_routes
from turnout.ml.adapters import get_adapter
from turnout.ml.artifacts import verify


def _route(**changes: object) -> Route:
    model = {"framework": "sklearn", "version": 1, "queue": "cpu", "input": {"width": 4}, **changes}
    return parse_routes(yaml.safe_load(json.dumps({"models": {"iris": model}}))).routes["iris"]


@pytest.fixture
def models(models_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    return copy


def test_a_good_artifact_verifies_and_loads(models: Path) -> None:
    path, meta = verify(models, _route())
    assert meta.framework == "sklearn" and meta.input["width"] == 4
    assert meta.classes == ["setosa", "versicolor", "virginica"]
    model = get_adapter("sklearn").load(path, meta, "cpu", {})
    assert model.predict([[5.1, 3.5, 1.4, 0.2]]).predictions == ["setosa"]


def test_a_tampered_artifact_is_refused(models: Path) -> None:
    artifact = models / "iris" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match=r"model 'iris': .*model.joblib has sha256 .*refusing to load it"):
        verify(models, _route())


def test_metadata_must_agree_with_the_route(models: Path) -> None:
    with pytest.raises(ArtifactError, match="the route says input width 5, the artifact takes 4"):
        verify(models, _route(input={"width": 5}))
    with pytest.raises(ArtifactError, match="the route says framework 'torch'"):
        verify(models, _route(framework="torch"))


def test_an_artifact_file_outside_its_folder_is_refused(models: Path) -> None:
    meta_path = models / "iris" / "1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["artifact"] = "../../digits-cnn/1/model.pt"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="leaves"):
        verify(models, _route())


def test_a_missing_model_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no meta.json in .*run `turnout models build`"):
        verify(tmp_path, _route())


def test_digits_cnn_meets_its_accuracy_bar_and_loads_weights_only(models: Path) -> None:
    route = _route(framework="torch", input={"width": 64})
    route = route.model_copy(update={"name": "digits-cnn"})
    path, meta = verify(models, route)
    assert meta.metrics["test_accuracy"] >= 0.95
    from sklearn.datasets import load_digits

    digits = load_digits()
    model = get_adapter("torch").load(path, meta, "cpu", {})
    predicted = model.predict(digits.data[-200:].tolist()).predictions
    assert sum(int(p == t) for p, t in zip(predicted, digits.target[-200:], strict=True)) >= 190


def test_a_job_registers_one_version_however_often_it_is_delivered(tmp_path: Path) -> None:
    """The select step run twice (its worker died after the rename) finds the
    version it already made instead of making another."""
    from turnout.core.catalog import list_versions
    from turnout.core.routes import parse_routes
    from turnout.ml.train import register, trial_folder

    route = parse_routes({"models": {"m": {"framework": "sklearn", "version": 1, "queue": "cpu",
                                           "input": {"kind": "tabular", "width": 4}}}}).routes["m"]
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "meta.json").write_text(json.dumps({"version": "1"}))
    trial = trial_folder(tmp_path, "m", "job-1", 0)
    trial.mkdir()
    (trial / "meta.json").write_text(json.dumps({"metrics": {"test_accuracy": 0.9}}))
    assert register(tmp_path, route, "job-1", trial, {}) == "2"
    assert register(tmp_path, route, "job-1", trial, {}) == "2"
    assert [v.version for v in list_versions(tmp_path, route)] == ["1", "2"]
    assert list_versions(tmp_path, route)[1].meta["training_job"] == "job-1"
    other = trial_folder(tmp_path, "m", "job-2", 0)
    other.mkdir()
    (other / "meta.json").write_text("{}")
    assert register(tmp_path, route, "job-2", other, {}) == "3"
