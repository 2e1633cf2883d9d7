"""The Open Inference Protocol's tensors (KServe's "V2", Triton's HTTP API):
datatypes, a tensor's JSON and binary forms, and the checks every input
kind shares. Pure Python (``array`` and ``struct``): the router reads and
writes these, and never imports numpy.

A tensor here is flat and row-major: ``shape`` and ``data`` with
``prod(shape)`` elements; its first dimension is the batch (the rows).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from dataclasses import dataclass
from typing import Any

from turnout.core.errors import InvalidInput

# OIP datatype -> (family, array/struct code). FP16 has no array code;
# BYTES is length-prefixed in binary form.
DATATYPES: dict[str, tuple[str, str | None]] = {
    "BOOL": ("bool", "?"),
    "INT8": ("int", "b"), "INT16": ("int", "h"), "INT32": ("int", "i"), "INT64": ("int", "q"),
    "UINT8": ("uint", "B"), "UINT16": ("uint", "H"), "UINT32": ("uint", "I"),
    "UINT64": ("uint", "Q"),
    "FP16": ("float", "e"), "FP32": ("float", "f"), "FP64": ("float", "d"),
    "BYTES": ("bytes", None),
}
# Turnout's dtype names (a tensor schema's ``dtype``) as OIP names them.
OIP_OF_DTYPE = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64",
    "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "bfloat16": "FP32",
}
_BIG_ENDIAN = sys.byteorder == "big"
# The most elements one request's tensors may hold together (as v1's tensor rows).
MAX_ELEMENTS = 16_000_000


@dataclass
class Tensor:
    """One named tensor of a request or a response, flat and row-major."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]

    @property
    def batch(self) -> int:
        return self.shape[0] if self.shape else 1

    def rows(self) -> list[Any]:
        """The tensor split along its first dimension, each row nested to the
        remaining shape (a scalar for a 1-d tensor)."""
        if not self.shape:
            return list(self.data)
        inner = self.shape[1:]
        size = math.prod(inner)
        return [_nest(self.data[i * size:(i + 1) * size], inner) for i in range(self.shape[0])]


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = math.prod(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def family(datatype: str) -> str:
    return DATATYPES[datatype][0]


def check_datatype(where: str, datatype: Any) -> str:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidInput(f"{where}: datatype {datatype!r} is not one of "
                           f"{', '.join(DATATYPES)}")
    return datatype


def check_shape(where: str, shape: Any) -> list[int]:
    if (not isinstance(shape, list) or len(shape) > 16
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InvalidInput(f"{where}: shape must be a list of sizes (whole numbers, 0 or more), "
                           f"got {shape!r}"[:300])
    if math.prod(shape) > MAX_ELEMENTS:
        raise InvalidInput(f"{where}: shape {shape} holds more than {MAX_ELEMENTS} elements")
    return shape


def flatten(where: str, data: Any) -> tuple[list[Any], list[int] | None]:
    """``data`` as sent, flat or nested, made flat; with the shape its nesting
    shows (None for data already flat, whose shape only ``shape`` can say)."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: data must be a list, got {type(data).__name__}")
    if not data or not isinstance(data[0], list):
        if any(isinstance(x, list) for x in data):
            raise InvalidInput(f"{where}: data mixes lists and values at one level")
        return data, None
    flat: list[Any] = []
    shape: list[int] = [len(data)]

    def walk(node: list[Any], depth: int) -> None:
        if depth == len(shape):
            shape.append(len(node))
        elif len(node) != shape[depth]:
            raise InvalidInput(f"{where}: data is ragged: {len(node)} entries where dimension "
                               f"{depth} has {shape[depth]}")
        if node and isinstance(node[0], list):
            for child in node:
                if not isinstance(child, list):
                    raise InvalidInput(f"{where}: data mixes lists and values at one level")
                walk(child, depth + 1)
        else:
            if any(isinstance(x, list) for x in node):
                raise InvalidInput(f"{where}: data mixes lists and values at one level")
            if depth + 1 != len(shape):
                raise InvalidInput(f"{where}: data is ragged: values at depth {depth + 1} "
                                   f"where others are at {len(shape)}")
            flat.extend(node)
        if len(flat) > MAX_ELEMENTS:
            raise InvalidInput(f"{where}: more than {MAX_ELEMENTS} elements")

    walk(data, 0)
    return flat, shape


def check_elements(where: str, datatype: str, flat: list[Any]) -> list[Any]:
    """The JSON elements, checked against the datatype: numbers are what
    they say (no bool for a number, no fraction for an integer, in range),
    BYTES are strings."""
    kind = family(datatype)
    for i, x in enumerate(flat):
        if x is None:
            continue  # a null: only a nullable column takes it, and its kind says so
        if kind == "bool":
            ok = isinstance(x, bool)
        elif kind == "bytes":
            ok = isinstance(x, str | bytes)
        elif isinstance(x, bool):
            ok = False
        elif kind == "float":
            ok = isinstance(x, int | float) and (not isinstance(x, float) or math.isfinite(x))
        else:
            ok = isinstance(x, int) and (kind == "int" or x >= 0)
        if not ok:
            raise InvalidInput(f"{where}: data[{i}] = {x!r:.40} is not a valid {datatype} element")
    return flat


def decode_binary(where: str, datatype: str, raw: bytes, count: int | None) -> list[Any]:
    """The binary data extension's bytes of one tensor as a flat list:
    little-endian elements, BYTES each with a 4-byte length before it."""
    kind, code = DATATYPES[datatype]
    if kind == "bytes":
        out: list[Any] = []
        at = 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise InvalidInput(f"{where}: binary BYTES data ends inside an element's length")
            (size,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + size > len(raw):
                raise InvalidInput(f"{where}: binary BYTES element {len(out)} is cut short")
            # Bytes as they came: text for a text input (``as_text``), the
            # file itself for an image.
            out.append(raw[at:at + size])
            at += size
        return out
    assert code is not None
    if kind == "bool":
        if count is not None and len(raw) != count:
            raise InvalidInput(f"{where}: binary data holds {len(raw)} elements, but shape "
                               f"says {count}")
        return [b != 0 for b in raw]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise InvalidInput(f"{where}: {len(raw)} bytes of binary data is not a whole number "
                           f"of {datatype} elements ({size} bytes each)")
    if count is not None and len(raw) // size != count:
        raise InvalidInput(f"{where}: binary data holds {len(raw) // size} elements, but shape "
                           f"says {count}")
    if code == "e":
        values: list[Any] = [v for (v,) in struct.iter_unpack("<e", raw)]
    else:
        values_array = array.array(code)
        values_array.frombytes(raw)
        if _BIG_ENDIAN:
            values_array.byteswap()
        values = values_array.tolist()
    if kind == "float" and not all(math.isfinite(v) for v in values):
        raise InvalidInput(f"{where}: binary data holds a NaN or an infinity")
    return values


def as_text(where: str, values: list[Any]) -> list[Any]:
    """BYTES elements as text: a JSON string as it is, binary as UTF-8."""
    out = []
    for i, x in enumerate(values):
        if isinstance(x, bytes):
            try:
                x = x.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{where}: element {i} is not UTF-8 text") from None
        out.append(x)
    return out


def encode_binary(datatype: str, flat: list[Any]) -> bytes:
    kind, code = DATATYPES[datatype]
    if kind == "bytes":
        parts = []
        for x in flat:
            data = x.encode("utf-8") if isinstance(x, str) else bytes(x)
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    assert code is not None
    if kind == "bool":
        return bytes(1 if x else 0 for x in flat)
    if code == "e":
        return b"".join(struct.pack("<e", float(x)) for x in flat)
    values = array.array(code, flat)
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tobytes()


def coerce(where: str, have: str, want: str, flat: list[Any]) -> list[Any]:
    """``flat`` of datatype ``have`` for an input that takes ``want``: any
    number for a float input (a client's FP32 for a FP64 model), any integer
    for an integer input; else an error naming the input and both types."""
    got, due = family(have), family(want)
    if got == due or (due == "float" and got in ("int", "uint")) or {got, due} == {"int", "uint"}:
        return [None if x is None else float(x) for x in flat] if due == "float" else flat
    raise InvalidInput(f"{where}: datatype {have}, but the model takes {want}")


def datatype_of(values: list[Any]) -> str:
    """The datatype that holds these (flat) output values as they are."""
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


@dataclass(frozen=True)
class Spec:
    """One input or output as a model's metadata gives it: ``-1`` for a
    free dimension, the first being the batch."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def bind(model: str, specs: list[Spec], given: list[Tensor]) -> dict[str, Tensor]:
    """The request's tensors matched to the model's inputs by name: each
    present, of a datatype the input takes (converted to its own) and of its
    shape (a ``[N, 1]`` tensor stands for a ``[N]`` input, as MLServer's
    columns come); one batch size for all. Errors name the input."""
    by_name = {t.name: t for t in given}
    wanted = {s.name for s in specs}
    unknown = [t.name for t in given if t.name not in wanted]
    if unknown:
        raise InvalidInput(f"input {unknown[0]!r}: model {model!r} has no such input; it takes "
                           f"{', '.join(repr(s.name) for s in specs)}")
    bound: dict[str, Tensor] = {}
    batch: int | None = None
    for spec in specs:
        tensor = by_name.get(spec.name)
        where = f"input {spec.name!r}"
        if tensor is None:
            raise InvalidInput(f"{where} is missing; model {model!r} takes "
                               f"{', '.join(repr(s.name) for s in specs)}")
        shape = list(tensor.shape)
        if len(spec.shape) == 1 and len(shape) == 2 and shape[1] == 1:
            shape = shape[:1]
        if len(shape) != len(spec.shape) or any(
                want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)):
            raise InvalidInput(f"{where}: shape {list(tensor.shape)}, but the model takes "
                               f"{list(spec.shape)} (-1: any size)")
        data = coerce(where, tensor.datatype, spec.datatype, tensor.data)
        if batch is not None and shape[0] != batch:
            raise InvalidInput(f"{where}: {shape[0]} rows, but another input has {batch}")
        batch = shape[0]
        bound[spec.name] = Tensor(spec.name, spec.datatype, shape, data)
    return bound
