"""What an input kind is: its schema in the route table, and what it does
with a request's rows (validate and convert them, describe itself, give a
warm-up sample, check that an artifact takes it)."""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

from turnout.core.oip import Spec, Tensor
from turnout.core.strict import StrictModel

_SHOWN = 40  # how much of an offending value a message quotes


def show(value: Any) -> str:
    """``value`` as a message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def finite_number(where: str, value: float) -> float:
    """An int or float as the float a model gets, or ``InvalidInput`` naming
    ``where`` (too large for a float, NaN or infinite)."""
    from turnout.core.errors import InvalidInput

    try:
        number = float(value)
    except OverflowError:
        raise InvalidInput(f"{where}: the number is too large for a float") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{where}: expected a finite number, got {show(value)}")
    return number


class InputKind(StrictModel):
    """One kind of input (``input.kind`` in the route table). A subclass is
    the kind's schema, its fields those the operator writes under ``input:``,
    and holds everything the kind means."""

    name: ClassVar[str]

    @abstractmethod
    def rows(self, model: str, inputs: list[Any]) -> list[Any]:
        """The request's rows, checked and converted to what an adapter's
        ``predict`` receives; ``InvalidInput`` naming the row (and column)
        and what was wrong."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The schema as clients see it (``GET /v1/models``)."""

    @abstractmethod
    def summary(self) -> str:
        """A few words for a table row (``turnout routes check``)."""

    @abstractmethod
    def warm_up(self) -> list[Any]:
        """One valid row, run at load so that the first request pays for no
        lazy initialisation."""

    @abstractmethod
    def v2_inputs(self) -> list[Spec]:
        """The Open Inference Protocol inputs this schema takes, as a model's
        v2 metadata lists them (the first dimension, -1, the batch)."""

    @abstractmethod
    def from_v2(self, tensors: dict[str, Tensor]) -> list[Any]:
        """v1 rows from a v2 request's tensors, already bound to
        ``v2_inputs`` (each present, of its datatype and shape); ``rows``
        checks them after, as it does v1's."""

    def mismatch(self, model: str, artifact_input: dict[str, Any]) -> str | None:
        """Why an artifact whose metadata says ``artifact_input`` cannot serve
        this schema, or None when it can."""
        return None
