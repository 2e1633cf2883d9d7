"""``tensor``: a row is a nested list of the declared shape and dtype (one
input), or an object keyed by input name (several), as an ONNX graph, a
TorchScript module or a ``torch.export`` program takes it. A shape is per row
(the batch dimension left out); ``-1`` is a free dimension.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from turnout.core import oip
from turnout.core.errors import InvalidInput
from turnout.core.inputs.base import InputKind, finite_number, show
from turnout.core.oip import OIP_OF_DTYPE, Spec
from turnout.core.strict import StrictModel

FLOATS = ("float16", "float32", "float64", "bfloat16")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = (*FLOATS, *INTS, "bool")
_MAX_ELEMENTS = 16_000_000


class TensorInput(StrictModel):
    name: str = Field(min_length=1, max_length=256)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    shape: tuple[int, ...] = Field(max_length=16)

    @model_validator(mode="after")
    def _dims(self) -> TensorInput:
        if any(d < -1 or d == 0 for d in self.shape):
            raise ValueError(f"a dimension is a positive size or -1 (free), got {list(self.shape)}")
        return self


class Tensor(InputKind):
    name: ClassVar[str] = "tensor"

    kind: Literal["tensor"] = "tensor"
    inputs: tuple[TensorInput, ...] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> Tensor:
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("an input is named twice")
        return self

    def rows(self, model: str, inputs: list[Any]) -> list[Any]:
        if len(self.inputs) == 1:
            only = self.inputs[0]
            return [_check(f"inputs[{i}]", only, row) for i, row in enumerate(inputs)]
        out: list[dict[str, Any]] = []
        names = [t.name for t in self.inputs]
        for i, row in enumerate(inputs):
            if not isinstance(row, dict):
                raise InvalidInput(f"inputs[{i}]: model {model!r} has several inputs; expected "
                                   f"an object keyed by {', '.join(map(repr, names))}, "
                                   f"got {show(row)}")
            unknown = [k for k in row if k not in names]
            if unknown:
                raise InvalidInput(f"inputs[{i}]: unknown input {unknown[0]!r}; model "
                                   f"{model!r} takes {', '.join(names)}")
            checked: dict[str, Any] = {}
            for spec in self.inputs:
                if spec.name not in row:
                    raise InvalidInput(f"inputs[{i}]: input {spec.name!r} is missing")
                checked[spec.name] = _check(f"inputs[{i}].{spec.name}", spec, row[spec.name])
            out.append(checked)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "tensor", "inputs": [t.model_dump() for t in self.inputs]}

    def summary(self) -> str:
        return " ".join(f"{t.dtype}{list(t.shape)}" for t in self.inputs)

    def v2_inputs(self) -> list[Spec]:
        return [Spec(t.name, OIP_OF_DTYPE[t.dtype], (-1, *t.shape)) for t in self.inputs]

    def from_v2(self, tensors: dict[str, oip.Tensor]) -> list[Any]:
        if len(self.inputs) == 1:
            return tensors[self.inputs[0].name].rows()
        columns = {t.name: tensors[t.name].rows() for t in self.inputs}
        batch = len(next(iter(columns.values())))
        return [{name: rows[i] for name, rows in columns.items()} for i in range(batch)]

    def warm_up(self) -> list[Any]:
        def zeros(spec: TensorInput) -> Any:
            value: Any = False if spec.dtype == "bool" else (0 if spec.dtype in INTS else 0.0)
            for dim in reversed(spec.shape):
                value = [value] * (1 if dim == -1 else dim)
            return value

        if len(self.inputs) == 1:
            return [zeros(self.inputs[0])]
        return [{t.name: zeros(t) for t in self.inputs}]


def _check(where: str, spec: TensorInput, value: Any) -> Any:
    """``value`` if it has ``spec``'s shape and dtype, else ``InvalidInput``
    naming the position (``inputs[0].pixels[2][5]``), what came and what was due."""
    count = [0]

    def walk(at: str, node: Any, depth: int) -> Any:
        if depth == len(spec.shape):
            return _element(at, spec.dtype, node)
        want = spec.shape[depth]
        if not isinstance(node, list):
            raise InvalidInput(f"{at}: expected a list (dimension {depth} of shape "
                               f"{list(spec.shape)}), got {show(node)}")
        if want != -1 and len(node) != want:
            raise InvalidInput(f"{at}: expected {want} entries (dimension {depth} of shape "
                               f"{list(spec.shape)}), got {len(node)}")
        count[0] += len(node)
        if count[0] > _MAX_ELEMENTS:
            raise InvalidInput(f"{where}: more than {_MAX_ELEMENTS} numbers in one row")
        if depth + 1 == len(spec.shape):
            return [_element(f"{at}[{j}]", spec.dtype, x) for j, x in enumerate(node)]
        return [walk(f"{at}[{j}]", x, depth + 1) for j, x in enumerate(node)]

    return walk(where, value, 0)


def _element(at: str, dtype: str, value: Any) -> Any:
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        raise InvalidInput(f"{at}: expected true or false, got {show(value)}")
    if isinstance(value, bool):
        raise InvalidInput(f"{at}: expected a number ({dtype}), got {show(value)}")
    if dtype in INTS:
        if isinstance(value, int):
            return value
        raise InvalidInput(f"{at}: expected a whole number ({dtype}), got {show(value)}")
    if isinstance(value, int | float):
        return finite_number(at, value)
    raise InvalidInput(f"{at}: expected a number ({dtype}), got {show(value)}")
