"""The Open Inference Protocol (v2) as Turnout speaks it, free of HTTP: an
``infer`` body (JSON, or JSON then binary tensors under Triton's binary data
extension) to v1's rows, a v1 answer to v2's outputs, and a model's
metadata from its version's schema.

Each input kind says which v2 inputs it takes and how their tensors become
rows (``InputKind.v2_inputs``, ``from_v2``); this module reads and writes the
tensors and fills in what a client left out (a datatype, a shape) from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from turnout.core import oip
from turnout.core.errors import InvalidInput, MalformedRequest
from turnout.core.oip import Spec, Tensor

HEADER_LENGTH = "inference-header-content-length"
# Triton's name for the binary data extension, as GET /v2 lists it.
EXTENSIONS = ["binary_tensor_data"]


@dataclass
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]] | None
    # input name -> its binary bytes (the binary data extension)
    binary: dict[str, bytes] = field(default_factory=dict)


def parse_infer(raw: bytes, header_length: str | None) -> InferRequest:
    """The body as sent: JSON alone, or (with ``Inference-Header-Content-
    Length``) that many bytes of JSON and then each binary input's bytes in
    the order the inputs are listed. Structure only; values come later."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise MalformedRequest(f"Inference-Header-Content-Length {header_length!r} is not a "
                                   f"length within the body's {len(raw)} bytes")
        head, rest = raw[: int(header_length)], raw[int(header_length):]
    else:
        head, rest = raw, b""
    try:
        body = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest("the body must be a JSON object with 'inputs'")
    unknown = sorted(set(body) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r}; an infer request has id, parameters, "
                           "inputs and outputs")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    parameters = _parameters("the request", body.get("parameters"))
    outputs = body.get("outputs")
    if outputs is not None and (not isinstance(outputs, list)
                                or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                           for o in outputs)):
        raise InvalidInput("'outputs' must be a list of objects with a 'name'")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    binary: dict[str, bytes] = {}
    at = 0
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"inputs[{i}] must be an object with a 'name'")
        where = f"input {item['name']!r}"
        size = _parameters(where, item.get("parameters")).get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise InvalidInput(f"{where} has no 'data'")
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a whole number of bytes")
        if "data" in item:
            raise InvalidInput(f"{where} has both 'data' and binary_data_size")
        if at + size > len(rest):
            raise InvalidInput(f"{where}: binary_data_size {size}, but only {len(rest) - at} "
                               "bytes of binary data are left in the body")
        binary[item["name"]] = rest[at:at + size]
        at += size
    if at != len(rest):
        raise InvalidInput(f"{len(rest) - at} bytes after the last binary input belong to none")
    return InferRequest(request_id, parameters, inputs, outputs, binary)


def _parameters(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return value


def tensors(request: InferRequest, specs: list[Spec]) -> list[Tensor]:
    """Each input as a flat tensor; a datatype or shape the client left out
    is the model's own (the batch size then from the data)."""
    by_name = {s.name: s for s in specs}
    out = []
    for item in request.inputs:
        name = item["name"]
        where = f"input {name!r}"
        spec = by_name.get(name)
        datatype = item.get("datatype")
        if datatype is None:
            if spec is None:
                raise InvalidInput(f"{where} has no datatype, and the model has no such input")
            datatype = spec.datatype
        datatype = oip.check_datatype(where, datatype)
        shape = item.get("shape")
        if name in request.binary:
            flat = oip.decode_binary(where, datatype, request.binary[name],
                                     math.prod(shape) if isinstance(shape, list) else None)
            nested = None
        else:
            flat, nested = oip.flatten(where, item["data"])
        oip.check_elements(where, datatype, flat)
        if shape is None:
            shape = nested or _shape_from(where, spec, len(flat))
        shape = oip.check_shape(where, shape)
        if math.prod(shape) != len(flat):
            raise InvalidInput(f"{where}: shape {shape} holds {math.prod(shape)} elements, but "
                               f"data has {len(flat)}")
        if nested is not None and nested != shape:
            raise InvalidInput(f"{where}: data is nested as {nested}, but shape says {shape}")
        out.append(Tensor(name, datatype, shape, flat))
    return out


def _shape_from(where: str, spec: Spec | None, count: int) -> list[int]:
    if spec is None:
        raise InvalidInput(f"{where} has no shape, and the model has no such input")
    inner = list(spec.shape[1:])
    if -1 in inner:
        raise InvalidInput(f"{where} has no shape, and the model's {list(spec.shape)} has a free "
                           "dimension besides the batch: send the shape")
    size = math.prod(inner)
    if count % size:
        raise InvalidInput(f"{where}: {count} elements are not a whole number of rows of "
                           f"{inner or 'one value'}")
    return [count // size, *inner]


# --- answers ------------------------------------------------------------------

def output_specs(meta: dict[str, Any], route_output: dict[str, Any] | None) -> list[Spec]:
    """The outputs a model's metadata lists: from its version's sampled
    answer where it has one (a model you added), else from the route's
    ``output`` and the classes the version knows."""
    out = meta.get("output") or {}
    named = out.get("outputs")
    # A classifier's pair of outputs (ONNX's label and probabilities) answers
    # as predictions and probabilities, as in v1.
    if isinstance(named, list) and named and out.get("type") != "label":
        return [Spec(str(o.get("name")), _onnx_datatype(o.get("type")),
                     (-1, *[d if isinstance(d, int) and d > 0 else -1 for d in o.get("shape") or []]))
                for o in named]
    kind = (route_output or {}).get("kind") or out.get("type")
    classes = meta.get("classes")
    probabilities = out.get("probabilities") or (len(classes) if classes else None)
    if kind == "vector":
        width = (route_output or {}).get("width") or -1
        return [Spec("predictions", "FP32", (-1, width))]
    if kind == "text":
        return [Spec("predictions", "BYTES", (-1,))]
    if kind == "number":
        return [Spec("predictions", "FP64", (-1,))]
    if kind == "label" or classes:
        label = "BYTES" if classes and isinstance(classes[0], str) else "INT64"
        specs = [Spec("predictions", label, (-1,))]
        if probabilities:
            specs.append(Spec("probabilities", "FP64", (-1, int(probabilities))))
        return specs
    shape = out.get("shape")
    inner = tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape or [])
    return [Spec("predictions", "FP64", (-1, *inner))]


_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
               "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int8)": "INT8",
               "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(string)": "BYTES"}


def _onnx_datatype(value: Any) -> str:
    return _ONNX_TYPES.get(str(value), "FP64")


def outputs(view: dict[str, Any], specs: list[Spec], request: InferRequest
            ) -> tuple[list[dict[str, Any]], bytes]:
    """v2's outputs from a finished task's predictions (and probabilities):
    one tensor per output, the rows stacked; those asked for only; binary
    where asked (per output, or ``binary_data_output`` for all). Returns the
    JSON outputs and the binary bytes that follow the JSON, in order."""
    predictions = view.get("predictions") or []
    produced: dict[str, list[Any]] = {}
    if predictions and all(isinstance(p, dict) for p in predictions):
        for key in predictions[0]:
            produced[key] = [p.get(key) for p in predictions]
    else:
        # One output: under its own name where the model has one (an ONNX
        # graph's "scores"), else "predictions".
        single = specs[0].name if len(specs) == 1 else "predictions"
        produced[single] = predictions
    if view.get("probabilities") is not None:
        produced["probabilities"] = view["probabilities"]
    wanted = request.outputs if request.outputs is not None else [{"name": n} for n in produced]
    unknown = [o["name"] for o in wanted if o["name"] not in produced]
    if unknown:
        raise InvalidInput(f"output {unknown[0]!r}: the model has outputs "
                           f"{', '.join(repr(n) for n in produced)}")
    all_binary = bool(request.parameters.get("binary_data_output"))
    spec_of = {s.name: s for s in specs}
    answer: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for asked in wanted:
        name = asked["name"]
        flat, shape = oip.flatten(f"output {name!r}", produced[name])
        shape = shape or [len(flat)]
        spec = spec_of.get(name)
        datatype = spec.datatype if spec is not None and _fits(spec.datatype, flat) \
            else oip.datatype_of(flat)
        if datatype == "BYTES":
            flat = [x if isinstance(x, str) else orjson.dumps(x).decode() for x in flat]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        binary = _parameters(f"output {name!r}", asked.get("parameters")).get(
            "binary_data", all_binary)
        if binary:
            data = oip.encode_binary(datatype, flat)
            entry["parameters"] = {"binary_data_size": len(data)}
            tail.append(data)
        else:
            entry["data"] = flat
        answer.append(entry)
    return answer, b"".join(tail)


def _fits(datatype: str, flat: list[Any]) -> bool:
    """Whether the metadata's datatype holds these values without loss of
    kind (a label spec'd INT64 that came as strings does not)."""
    kind = oip.family(datatype)
    if kind == "bytes":
        return all(isinstance(x, str) for x in flat)
    if kind == "bool":
        return all(isinstance(x, bool) for x in flat)
    if kind in ("int", "uint"):
        return all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat)
