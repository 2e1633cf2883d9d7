"""``columns``: a row is an object of named, typed columns,
``{"age": 31, "income": 52.5, "city": "Paris"}``, as a scikit-learn pipeline
over a DataFrame takes it (a ``ColumnTransformer`` with string columns).

The router checks every value here without pandas; the worker builds the
DataFrame with each column's dtype (``turnout.ml.frames``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from turnout.core.errors import InvalidInput
from turnout.core.inputs.base import InputKind, finite_number, show
from turnout.core.oip import Spec, Tensor, as_text
from turnout.core.strict import StrictModel

COLUMN_TYPES = ("number", "integer", "string", "boolean")
# A value the warm-up row gives a column of each type.
_WARM = {"number": 0.0, "integer": 0, "string": "", "boolean": False}


class Column(StrictModel):
    name: str = Field(min_length=1, max_length=256)
    type: Literal["number", "integer", "string", "boolean"]
    nullable: bool = False


class Columns(InputKind):
    name: ClassVar[str] = "columns"

    kind: Literal["columns"] = "columns"
    columns: tuple[Column, ...] = Field(min_length=1, max_length=10_000)

    @model_validator(mode="after")
    def _unique(self) -> Columns:
        seen: set[str] = set()
        for column in self.columns:
            if column.name in seen:
                raise ValueError(f"column {column.name!r} is named twice")
            seen.add(column.name)
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def rows(self, model: str, inputs: list[Any]) -> list[dict[str, Any]]:
        names = set(self.names)
        # The common values pass on a type test alone; anything else (and
        # every error, with its message) takes _value's long way.
        fast = [(c.name, _FAST[c.type], c) for c in self.columns]
        out: list[dict[str, Any]] = []
        for i, row in enumerate(inputs):
            if not isinstance(row, dict):
                raise InvalidInput(
                    f"inputs[{i}]: expected an object of columns such as "
                    f"{{{self.columns[0].name!r}: ...}}, got {show(row)}"
                )
            if len(row) != len(names) or not names.issuperset(row):
                unknown = [k for k in row if k not in names]
                if unknown:
                    raise InvalidInput(
                        f"inputs[{i}]: unknown column {unknown[0]!r}; model {model!r} takes "
                        f"{', '.join(self.names)}"
                    )
            checked: dict[str, Any] = {}
            for name, types, column in fast:
                try:
                    value = row[name]
                except KeyError:
                    raise InvalidInput(
                        f"inputs[{i}]: column {name!r} ({column.type}) is missing"
                    ) from None
                kind = type(value)
                if types is _NUMBER:
                    if kind is float and math.isfinite(value):
                        checked[name] = value
                        continue
                    if kind is int and -_EXACT < value < _EXACT:
                        checked[name] = float(value)  # widened
                        continue
                elif kind in types:
                    checked[name] = value
                    continue
                checked[name] = _value(i, column, value)
            out.append(checked)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": "columns", "columns": [c.model_dump(exclude_defaults=True)
                                               for c in self.columns]}

    def summary(self) -> str:
        return f"{len(self.columns)} columns"

    def warm_up(self) -> list[Any]:
        return [{c.name: _WARM[c.type] for c in self.columns}]

    def v2_inputs(self) -> list[Spec]:
        # One input per column, as MLServer's pandas content type sends them.
        return [Spec(c.name, _DATATYPE[c.type], (-1,)) for c in self.columns]

    def from_v2(self, tensors: dict[str, Tensor]) -> list[Any]:
        names = self.names
        values = [as_text(f"input {c.name!r}", tensors[c.name].data) if c.type == "string"
                  else tensors[c.name].data for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]


_DATATYPE = {"number": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}
_NUMBER = frozenset({float, int})
# Integers a float holds exactly; larger ones take the long way (and its checks).
_EXACT = 2**53
_FAST: dict[str, frozenset[type]] = {"number": _NUMBER, "integer": frozenset({int}),
                                     "string": frozenset({str}), "boolean": frozenset({bool})}


def _value(i: int, column: Column, value: Any) -> Any:
    """The value as the model gets it, or ``InvalidInput`` naming row and column."""
    where = f"inputs[{i}].{column.name}"
    if value is None:
        if column.nullable:
            return None
        raise InvalidInput(f"{where}: null, but the column ({column.type}) takes no null")
    kind = column.type
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool):
        pass  # true/false in a number column is a mistake, not 1/0
    elif kind == "integer":
        # A float never becomes an integer, even 3.0: the caller may have
        # meant 3.2 and lost it upstream (mlflow#5525's surprise, the other way).
        if isinstance(value, int):
            return value
    elif isinstance(value, int | float):
        # An integer where a number goes is widened.
        return finite_number(where, value)
    expected = {"number": "a number", "integer": "a whole number (no decimal point)",
                "string": "a string", "boolean": "true or false"}[kind]
    raise InvalidInput(f"{where}: expected {expected}, got {show(value)}")
