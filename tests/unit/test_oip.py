"""The Open Inference Protocol's tensors and requests, without a server:
flat and nested data, the binary data extension both ways (checked against
numpy's own bytes), what each input kind takes, what is filled in, and the
errors, each naming the input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from turnout.core import oip
from turnout.core.errors import InvalidInput, MalformedRequest
from turnout.core.inputs import Columns, Tabular, Tensor, Text
from turnout.router import oip as v2


@pytest.mark.parametrize(("datatype", "dtype", "values"), [
    ("FP32", np.float32, [1.5, -2.25, 0.0]), ("FP64", np.float64, [1e-300, 3.0]),
    ("FP16", np.float16, [0.5, 2.0]), ("INT8", np.int8, [-128, 127]),
    ("INT64", np.int64, [2**62, -5]), ("UINT8", np.uint8, [0, 255]),
    ("UINT32", np.uint32, [4_000_000_000]), ("BOOL", np.bool_, [True, False, True]),
])
def test_binary_tensors_are_numpys_little_endian_bytes(datatype: str, dtype: Any,
                                                        values: list[Any]) -> None:
    raw = np.asarray(values, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    assert oip.encode_binary(datatype, values) == raw
    assert oip.decode_binary("input 'x'", datatype, raw, len(values)) == values


def test_binary_bytes_are_length_prefixed_utf8() -> None:
    raw = oip.encode_binary("BYTES", ["hé", "", "x"])
    assert raw == b"\x03\x00\x00\x00h\xc3\xa9" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00x"
    got = oip.decode_binary("input 't'", "BYTES", raw, None)
    assert got == ["hé".encode(), b"", b"x"]  # the bytes: text for a text input, else a file
    assert oip.as_text("input 't'", got) == ["hé", "", "x"]
    with pytest.raises(InvalidInput, match="input 't': element 0 is not UTF-8 text"):
        oip.as_text("input 't'", [b"\xff"])
    with pytest.raises(InvalidInput, match="input 't': binary BYTES element 0 is cut short"):
        oip.decode_binary("input 't'", "BYTES", b"\x09\x00\x00\x00abc", None)


def test_binary_sizes_must_agree_with_the_shape() -> None:
    with pytest.raises(InvalidInput, match="holds 2 elements, but shape says 3"):
        oip.decode_binary("input 'x'", "FP32", np.zeros(2, np.float32).tobytes(), 3)
    with pytest.raises(InvalidInput, match="not a whole number of FP32 elements"):
        oip.decode_binary("input 'x'", "FP32", b"\x00" * 6, None)
    with pytest.raises(InvalidInput, match="NaN or an infinity"):
        oip.decode_binary("input 'x'", "FP64", np.asarray([np.nan]).tobytes(), 1)


def test_nested_data_is_flattened_with_its_shape_and_ragged_data_refused() -> None:
    assert oip.flatten("x", [[1, 2], [3, 4], [5, 6]]) == ([1, 2, 3, 4, 5, 6], [3, 2])
    assert oip.flatten("x", [1, 2, 3]) == ([1, 2, 3], None)
    with pytest.raises(InvalidInput, match="ragged"):
        oip.flatten("x", [[1, 2], [3]])
    with pytest.raises(InvalidInput, match="mixes lists and values"):
        oip.flatten("x", [[1, 2], 3])


@pytest.mark.parametrize(("datatype", "value"), [
    ("FP32", True), ("INT64", 1.5), ("UINT8", -1), ("BOOL", 1), ("BYTES", 3), ("FP64", "1"),
])
def test_elements_must_be_what_their_datatype_says(datatype: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=f"not a valid {datatype} element"):
        oip.check_elements("input 'x'", datatype, [value])


def _request(inputs: list[dict[str, Any]], **extra: Any) -> v2.InferRequest:
    return v2.parse_infer(json.dumps({"inputs": inputs, **extra}).encode(), None)


def test_each_kind_lists_its_inputs_and_takes_their_tensors() -> None:
    tabular = Tabular(width=2)
    rows = tabular.from_v2(oip.bind("m", tabular.v2_inputs(), v2.tensors(
        _request([{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]),
        tabular.v2_inputs())))
    assert rows == [[1.0, 2.0], [3.0, 4.0]]

    columns = Columns(columns=[{"name": "age", "type": "integer"},
                               {"name": "city", "type": "string"}])
    assert [s.describe() for s in columns.v2_inputs()] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "city", "datatype": "BYTES", "shape": [-1]}]
    sent = _request([{"name": "age", "datatype": "INT32", "shape": [2, 1], "data": [31, 64]},
                     {"name": "city", "datatype": "BYTES", "shape": [2], "data": ["Paris", "Nice"]}])
    assert columns.from_v2(oip.bind("m", columns.v2_inputs(), v2.tensors(sent, columns.v2_inputs()))) \
        == [{"age": 31, "city": "Paris"}, {"age": 64, "city": "Nice"}]

    tensor = Tensor(inputs=[{"name": "a", "dtype": "float32", "shape": [2]},
                            {"name": "b", "dtype": "int64", "shape": [-1]}])
    assert [s.describe() for s in tensor.v2_inputs()] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "b", "datatype": "INT64", "shape": [-1, -1]}]
    sent = _request([{"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
                     {"name": "b", "datatype": "INT64", "shape": [1, 3], "data": [7, 8, 9]}])
    assert tensor.from_v2(oip.bind("m", tensor.v2_inputs(), v2.tensors(sent, tensor.v2_inputs()))) \
        == [{"a": [1.0, 2.0], "b": [7, 8, 9]}]

    text = Text()
    sent = _request([{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}])
    assert text.from_v2(oip.bind("m", text.v2_inputs(), v2.tensors(sent, text.v2_inputs()))) \
        == ["x", "y"]


def test_a_missing_datatype_or_shape_is_the_models_own() -> None:
    specs = Tabular(width=2).v2_inputs()
    flat = v2.tensors(_request([{"name": "input", "data": [1, 2, 3, 4]}]), specs)[0]
    assert (flat.datatype, flat.shape) == ("FP64", [2, 2])
    nested = v2.tensors(_request([{"name": "input", "data": [[1, 2], [3, 4], [5, 6]]}]), specs)[0]
    assert nested.shape == [3, 2]
    with pytest.raises(InvalidInput, match="3 elements are not a whole number of rows"):
        v2.tensors(_request([{"name": "input", "data": [1, 2, 3]}]), specs)


@pytest.mark.parametrize(("inputs", "said"), [
    ([{"name": "input", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]}],
     "input 'input': datatype BOOL, but the model takes FP64"),
    ([{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}],
     "input 'input': shape [1, 3], but the model takes [-1, 2]"),
    ([{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
     "input 'x': model 'm' has no such input; it takes 'input'"),
    ([{"name": "input", "datatype": "FP42", "shape": [1, 2], "data": [1, 2]}],
     "input 'input': datatype 'FP42' is not one of"),
    ([{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [[1, 2], [3, 4]]}],
     "input 'input': data is nested as [2, 2], but shape says [1, 4]"),
])
def test_what_does_not_fit_is_named(inputs: list[dict[str, Any]], said: str) -> None:
    specs = Tabular(width=2).v2_inputs()
    with pytest.raises(InvalidInput, match=said.replace("[", r"\[").replace("]", r"\]")):
        oip.bind("m", specs, v2.tensors(_request(inputs), specs))


def test_columns_must_share_a_batch() -> None:
    columns = Columns(columns=[{"name": "a", "type": "number"}, {"name": "b", "type": "number"}])
    sent = _request([{"name": "a", "datatype": "FP64", "shape": [2], "data": [1, 2]},
                     {"name": "b", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]}])
    with pytest.raises(InvalidInput, match="input 'b': 3 rows, but another input has 2"):
        oip.bind("m", columns.v2_inputs(), v2.tensors(sent, columns.v2_inputs()))


def test_the_binary_extension_splits_the_body_after_the_json_header() -> None:
    data = np.asarray([[1.0, 2.0]], dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2],
                                   "parameters": {"binary_data_size": len(data)}}]}).encode()
    parsed = v2.parse_infer(head + data, str(len(head)))
    assert v2.tensors(parsed, Tabular(width=2).v2_inputs())[0].data == [1.0, 2.0]
    with pytest.raises(InvalidInput, match="only 4 bytes of binary data are left"):
        v2.parse_infer(head + data[:4], str(len(head)))
    with pytest.raises(InvalidInput, match="3 bytes after the last binary input"):
        v2.parse_infer(head + data + b"xyz", str(len(head)))
    with pytest.raises(MalformedRequest, match="Inference-Header-Content-Length"):
        v2.parse_infer(head, "99999")


def test_outputs_stack_the_rows_and_go_binary_where_asked() -> None:
    view = {"predictions": ["setosa", "virginica"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]}
    specs = v2.output_specs({"classes": ["setosa", "virginica"]}, {"kind": "label"})
    plain, tail = v2.outputs(view, specs, _request([{"name": "input", "data": [1]}]))
    assert plain == [{"name": "predictions", "datatype": "BYTES", "shape": [2],
                      "data": ["setosa", "virginica"]},
                     {"name": "probabilities", "datatype": "FP64", "shape": [2, 2],
                      "data": [0.9, 0.1, 0.2, 0.8]}]
    assert tail == b""
    asked = _request([{"name": "input", "data": [1]}],
                     outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}])
    binary, tail = v2.outputs(view, specs, asked)
    assert binary == [{"name": "probabilities", "datatype": "FP64", "shape": [2, 2],
                       "parameters": {"binary_data_size": 32}}]
    assert np.frombuffer(tail, "<f8").tolist() == [0.9, 0.1, 0.2, 0.8]
    several = {"predictions": [{"boxes": [1, 2], "score": 0.5}, {"boxes": [3, 4], "score": 0.25}]}
    named, _ = v2.outputs(several, [], _request([{"name": "input", "data": [1]}]))
    assert [(o["name"], o["datatype"], o["shape"]) for o in named] == [
        ("boxes", "INT64", [2, 2]), ("score", "FP64", [2])]
