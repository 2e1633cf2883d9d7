from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from turnout.core.errors import ConfigError
from turnout.core.routes import load_routes, parse_routes

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
defaults:
  time_limit_s: 20
  max_rows: 100
queues:
  gpu: {max_depth: 50}
models:
  iris:
    framework: sklearn
    version: 1
    queue: cpu
    input: {kind: tabular, width: 4}
  digits-cnn:
    framework: torch
    version: 2
    queue: gpu
    fallback: cpu
    input: {width: 64}
    time_limit_s: 5
    max_batch: 32
    max_delay_ms: 4
"""


def _load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return load_routes(path)


def test_the_shipped_route_table_is_valid() -> None:
    table = load_routes(REPO / "configs" / "routes.yaml")
    assert table.routes["iris"].queue == "cpu"
    assert table.routes["digits-cnn"].queue == "gpu"
    assert table.routes["digits-cnn"].fallback == "cpu"


def test_defaults_fold_into_each_route(tmp_path: Path) -> None:
    table = _load(tmp_path, GOOD)
    iris, cnn = table.routes["iris"], table.routes["digits-cnn"]
    assert (iris.time_limit_s, iris.max_rows, iris.version) == (20, 100, "1")
    assert iris.artifact_dir == "iris/1"
    assert cnn.artifact_dir == "digits-cnn/2"
    assert cnn.time_limit_s == 5 and 0 < cnn.soft_time_limit_s < 5
    assert cnn.queues == ("gpu", "cpu")
    assert table.queue_config("gpu").max_depth == 50
    assert table.queue_config("cpu").max_depth == 10_000
    assert table.max_time_limit_s == 20
    assert [r.name for r in table.routes_for_queues({"cpu"})] == ["iris", "digits-cnn"]
    assert [r.name for r in table.routes_for_queues({"gpu"})] == ["digits-cnn"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("queue: cpu", "queue: gpux"), "models.iris.queue (line 10): expected 'cpu', 'gpu' or 'gpu.<index>', got 'gpux'"),
        (("queue: gpu\n", "queue: gpu.01\n"), "models.digits-cnn.queue (line 15): expected 'cpu', 'gpu' or 'gpu.<index>'"),
        (("fallback: cpu", "fallback: gpu"), "models.digits-cnn (line 12): fallback 'gpu' is the route's own queue"),
        (("framework: torch", "framework: tensorflow"), "models.digits-cnn.framework (line 13): expected one of sklearn, torch, embedding, onnx, huggingface, xgboost, lightgbm or 'module:Class'"),
        (("    version: 1\n", ""), "models.iris.version (line 7): required key is missing"),
        (("input: {kind: tabular, width: 4}", "input: {kind: tabular}"), "models.iris.input (line 11): a tabular input needs 'width'"),
        (("input: {width: 64}", "input: {width: 0}"), "models.digits-cnn.input.width (line 17): Input should be greater than or equal to 1"),
        (("time_limit_s: 5", "time_limit_s: -1"), "models.digits-cnn.time_limit_s (line 18): Input should be greater than 0"),
        (("max_batch: 32", "max_bacth: 32"), "models.digits-cnn.max_bacth (line 19): unknown key (a typo?)"),
        (("gpu: {max_depth: 50}", "gpu: {max_depth: 0}"), "queues.gpu.max_depth (line 5): Input should be greater than or equal to 1"),
        (("gpu: {max_depth: 50}", "tpu: {max_depth: 5}"), "queues (line 4): expected 'cpu', 'gpu' or 'gpu.<index>', got 'tpu'"),
        (("  iris:\n", "  Iris!:\n"), "models (line 6): model name 'Iris!'"),
        (("max_rows: 100", "max_rows: many"), "defaults.max_rows (line 3): Input should be a valid integer"),
    ],
)
def test_bad_tables_name_the_key_and_its_line(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, GOOD.replace(old, new, 1))
    assert message in str(err.value)
    assert str(tmp_path / "routes.yaml") in str(err.value)


def test_artifact_folders_must_stay_inside_the_models_folder() -> None:
    data = yaml.safe_load(GOOD)
    data["models"]["iris"]["artifact"] = "../../etc"
    with pytest.raises(ConfigError, match="models.iris.artifact: must be a folder inside the models folder"):
        parse_routes(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [1, 2", "not valid YAML"),
        ("- just a list", "expected a mapping with a 'models' key"),
        ("queues: {}", "models: required key is missing"),
        ("models: {}", "the table names no model"),
    ],
)
def test_files_of_the_wrong_shape(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, text)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the route table .*nope.yaml"):
        load_routes(tmp_path / "nope.yaml")


def test_devices_place_a_model_on_device_queues(tmp_path: Path) -> None:
    table = _load(tmp_path, GOOD.replace("    fallback: cpu\n", "    devices: [0, 2]\n    fallback: cpu\n"))
    cnn = table.routes["digits-cnn"]
    assert cnn.devices == (0, 2)
    assert cnn.placement == ("gpu.0", "gpu.2")
    assert cnn.queues == ("gpu.0", "gpu.2", "cpu")
    assert table.routes_for_queues({"gpu", "gpu.1"}) == []
    assert table.routes_for_queues({"gpu", "gpu.2"}) == [cnn]


@pytest.mark.parametrize(
    ("devices", "queue", "message"),
    [
        ("[]", "gpu", "devices (line 16): an empty device list places the model nowhere"),
        ("[0, 0]", "gpu", "a device is listed twice in [0, 0]"),
        ("[-1]", "gpu", "device indices start at 0"),
        ("[1]", "cpu", "'queue' must be 'gpu', got 'cpu'"),
        ("[x]", "gpu", "digits-cnn.devices.0"),
    ],
)
def test_bad_device_lists_are_named(tmp_path: Path, devices: str, queue: str, message: str) -> None:
    text = GOOD.replace("    queue: gpu\n    fallback: cpu\n", f"    queue: {queue}\n    devices: {devices}\n")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert message in str(err.value)
