"""The ``columns`` and ``tensor`` input kinds, format detection and archive
unpacking: pure logic, no processes."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from turnout.core.archives import unpack
from turnout.core.errors import InvalidInput, ModelNotAdded, PayloadTooLarge
from turnout.core.formats import detect
from turnout.core.inputs import Columns, Tensor, parse_schema

COLS = Columns.model_validate({"columns": [
    {"name": "age", "type": "integer"}, {"name": "income", "type": "number", "nullable": True},
    {"name": "city", "type": "string"}, {"name": "member", "type": "boolean"}]})
ROW = {"age": 31, "income": 52.5, "city": "Paris", "member": True}


def test_columns_widen_integers_and_keep_nulls_where_allowed() -> None:
    rows = COLS.rows("m", [{**ROW, "income": 52}, {**ROW, "income": None}])
    assert rows[0]["income"] == 52.0 and isinstance(rows[0]["income"], float)
    assert rows[1]["income"] is None


@pytest.mark.parametrize(("row", "message"), [
    ({**ROW, "age": 31.0}, r"inputs\[0\]\.age: expected a whole number"),
    ({**ROW, "age": True}, r"inputs\[0\]\.age: expected a whole number"),
    ({**ROW, "income": "x"}, r"inputs\[0\]\.income: expected a number, got 'x'"),
    ({**ROW, "income": float("nan")}, r"inputs\[0\]\.income: expected a finite number"),
    ({**ROW, "income": 10**400}, r"inputs\[0\]\.income: the number is too large for a float"),
    ({**ROW, "city": 3}, r"inputs\[0\]\.city: expected a string"),
    ({**ROW, "city": None}, r"inputs\[0\]\.city: null, but the column \(string\)"),
    ({**ROW, "member": 1}, r"inputs\[0\]\.member: expected true or false"),
    ({k: v for k, v in ROW.items() if k != "age"}, r"column 'age' \(integer\) is missing"),
    ({**ROW, "zip": 1}, r"unknown column 'zip'; model 'm' takes age, income, city, member"),
])
def test_columns_name_the_row_the_column_and_what_came(row: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        COLS.rows("m", [row])


def test_a_column_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="named twice"):
        parse_schema({"kind": "columns", "columns": [{"name": "a", "type": "number"}] * 2})


def test_tensors_check_shape_and_dtype_at_every_position() -> None:
    one = Tensor.model_validate({"inputs": [{"name": "x", "dtype": "float32", "shape": [2, -1]}]})
    assert one.rows("m", [[[1, 2, 3], [4, 5, 6]]]) == [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]
    with pytest.raises(InvalidInput, match=r"inputs\[0\]: expected 2 entries"):
        one.rows("m", [[[1.0]]])
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\[1\]\[0\]: expected a number"):
        one.rows("m", [[[1.0], ["a"]]])
    ints = Tensor.model_validate({"inputs": [{"name": "ids", "dtype": "int64", "shape": [3]},
                                             {"name": "mask", "dtype": "bool", "shape": [3]}]})
    good = {"ids": [1, 2, 3], "mask": [True, True, False]}
    assert ints.rows("m", [good]) == [good]
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.ids\[1\]: expected a whole number"):
        ints.rows("m", [{**good, "ids": [1, 2.5, 3]}])
    with pytest.raises(InvalidInput, match=r"inputs\[0\]: input 'mask' is missing"):
        ints.rows("m", [{"ids": [1, 2, 3]}])
    with pytest.raises(InvalidInput, match="an object keyed by 'ids', 'mask'"):
        ints.rows("m", [[1, 2, 3]])


def test_formats_are_told_from_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "m.skops").write_bytes(b"PK")
    assert detect(tmp_path / "m.skops").format.name == "skops"
    (tmp_path / "m.pkl").write_bytes(b"\x80")
    assert detect(tmp_path / "m.pkl").format.pickle
    (tmp_path / "booster.json").write_text('{"learner": {}}')
    assert detect(tmp_path / "booster.json").format.name == "xgboost"
    (tmp_path / "trees.txt").write_text("tree\nversion=v4\n")
    assert detect(tmp_path / "trees.txt").format.name == "lightgbm"
    state = tmp_path / "weights.pt"
    with zipfile.ZipFile(state, "w") as zf:
        zf.writestr("weights/data.pkl", b"x")
    with pytest.raises(ModelNotAdded, match="not TorchScript"):
        detect(state)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(ModelNotAdded, match="without safetensors"):
        detect(hf)
    (hf / "model.safetensors").write_bytes(b"")
    assert detect(hf).format.name == "huggingface"
    with pytest.raises(ModelNotAdded, match="unknown model format"):
        (tmp_path / "x.bin").write_bytes(b"")
        detect(tmp_path / "x.bin")


def _tar(path: Path, members: list[tarfile.TarInfo], data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def test_archives_refuse_escapes_links_and_bombs(tmp_path: Path) -> None:
    escape = tarfile.TarInfo("/abs/model.onnx")
    with pytest.raises(ModelNotAdded, match="outside its folder"):
        unpack(_tar(tmp_path / "a.tgz", [escape]), tmp_path / "a", 1 << 20)
    link = tarfile.TarInfo("m/x")
    link.type, link.linkname = tarfile.LNKTYPE, "../../etc/passwd"
    with pytest.raises(ModelNotAdded, match="is a link"):
        unpack(_tar(tmp_path / "b.tgz", [link]), tmp_path / "b", 1 << 20)
    big = tarfile.TarInfo("m/big.bin")
    big.size = 4096
    with pytest.raises(PayloadTooLarge, match="unpacks to more than 1024"):
        unpack(_tar(tmp_path / "c.tgz", [big], b"x" * 4096), tmp_path / "c", 1024)
    zipped = tmp_path / "d.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("model/../../up.onnx", b"x")
    with pytest.raises(ModelNotAdded, match="outside its folder"):
        unpack(zipped, tmp_path / "d", 1 << 20)
    fine = tmp_path / "e.zip"
    with zipfile.ZipFile(fine, "w") as zf:
        zf.writestr("model/a.onnx", b"x")
    assert unpack(fine, tmp_path / "e", 1 << 20) == tmp_path / "e" / "model"


def test_the_table_in_force_composes_added_routes_under_the_operators_keys(tmp_path: Path) -> None:
    from turnout.core.errors import ConfigError
    from turnout.core.routes import compose

    routes = tmp_path / "routes.yaml"
    routes.write_text("models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: cpu\n"
                      "    input: {width: 4}\n  mine:\n    queue: gpu\n    max_rows: 7\n")
    models = tmp_path / "models"
    (models / "mine").mkdir(parents=True)
    (models / "mine" / "route.yaml").write_text(
        "framework: onnx\nversion: '1'\nqueue: cpu\ninput: {kind: tensor, inputs: "
        "[{name: x, dtype: float32, shape: [4]}]}\n")
    (models / "other").mkdir()
    (models / "other" / "route.yaml").write_text(
        "framework: xgboost\nversion: '2'\nqueue: cpu\ninput: {kind: tabular, width: 3}\n")
    text, table = compose(routes, models)
    assert set(table.routes) == {"iris", "mine", "other"}
    mine = table.routes["mine"]
    assert (mine.queue, mine.max_rows, mine.framework) == ("gpu", 7, "onnx")  # the operator's win
    assert table.routes["other"].version == "2"
    # What is published parses to the same table.
    import yaml

    from turnout.core.routes import parse_routes

    assert parse_routes(yaml.safe_load(text)).routes["mine"] == mine
    (models / "other" / "route.yaml").write_text("framework: xgboost\nqueue: cpu\n")
    with pytest.raises(ConfigError, match=r"other/route.yaml: models.other.version"):
        compose(routes, models)
