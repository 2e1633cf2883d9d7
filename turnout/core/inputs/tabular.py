"""``tabular``: a row is a list of ``width`` finite numbers."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from turnout.core.errors import InvalidInput
from turnout.core.inputs.base import InputKind, show
from turnout.core.oip import Spec, Tensor

# Integers a float holds exactly.
_EXACT = 2**53
_isfinite = math.isfinite


class Tabular(InputKind):
    name: ClassVar[str] = "tabular"

    kind: Literal["tabular"] = "tabular"
    # numbers per row
    width: int | None = Field(default=None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _needs_width(self) -> Tabular:
        if self.width is None:
            raise ValueError("a tabular input needs 'width' (numbers per row)")
        return self

    @property
    def columns(self) -> int:
        assert self.width is not None  # the validator guarantees it
        return self.width

    def rows(self, model: str, inputs: list[Any]) -> list[list[float]]:
        width = self.columns
        rows: list[list[float]] = []
        for i, row in enumerate(inputs):
            if not isinstance(row, list):
                raise InvalidInput(
                    f"inputs[{i}]: expected a list of {width} numbers, got {show(row)}"
                )
            if len(row) != width:
                raise InvalidInput(
                    f"inputs[{i}]: expected {width} numbers for model {model!r}, got {len(row)}"
                )
            out: list[float] = []
            for j, value in enumerate(row):
                # The common values pass on a type test alone (a bool is not
                # an int here); anything else takes the long way below.
                kind = type(value)
                if kind is float and _isfinite(value):
                    out.append(value)
                    continue
                if kind is int and -_EXACT < value < _EXACT:
                    out.append(float(value))
                    continue
                # bool is an int in Python, but true/false in a feature row is a mistake.
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInput(f"inputs[{i}][{j}]: expected a number, got {show(value)}")
                try:
                    number = float(value)
                except OverflowError:
                    raise InvalidInput(
                        f"inputs[{i}][{j}]: the number is too large for a float"
                    ) from None
                if not math.isfinite(number):
                    raise InvalidInput(
                        f"inputs[{i}][{j}]: expected a finite number, got {show(value)}"
                    )
                out.append(number)
            rows.append(out)
        return rows

    def describe(self) -> dict[str, Any]:
        return {"kind": "tabular", "width": self.width}

    def summary(self) -> str:
        return f"{self.width} numbers"

    def warm_up(self) -> list[Any]:
        return [[0.0] * self.columns]

    def v2_inputs(self) -> list[Spec]:
        return [Spec("input", "FP64", (-1, self.columns))]

    def from_v2(self, tensors: dict[str, Tensor]) -> list[Any]:
        return tensors["input"].rows()

    def mismatch(self, model: str, artifact_input: dict[str, Any]) -> str | None:
        width = artifact_input.get("width")
        if width != self.width:
            return (f"model {model!r}: the route says input width {self.width}, "
                    f"the artifact takes {width}")
        return None
