"""``text``: a row is a non-empty string of at most ``max_length`` characters."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from turnout.core.errors import InvalidInput
from turnout.core.inputs.base import InputKind, show
from turnout.core.oip import Spec, Tensor, as_text


class Text(InputKind):
    name: ClassVar[str] = "text"

    kind: Literal["text"] = "text"
    # characters per string
    max_length: int = Field(default=2048, ge=1)

    def rows(self, model: str, inputs: list[Any]) -> list[str]:
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidInput(f"inputs[{i}]: expected a string, got {show(text)}")
            if not text.strip():
                raise InvalidInput(f"inputs[{i}]: the string is empty")
            if len(text) > self.max_length:
                raise InvalidInput(
                    f"inputs[{i}]: {len(text)} characters, but model {model!r} takes "
                    f"at most {self.max_length}"
                )
        return inputs

    def describe(self) -> dict[str, Any]:
        return {"kind": "text", "max_length": self.max_length}

    def summary(self) -> str:
        return f"text<={self.max_length}"

    def warm_up(self) -> list[Any]:
        return ["warm up"]

    def v2_inputs(self) -> list[Spec]:
        return [Spec("text", "BYTES", (-1,))]

    def from_v2(self, tensors: dict[str, Tensor]) -> list[Any]:
        return as_text("input 'text'", tensors["text"].data)
