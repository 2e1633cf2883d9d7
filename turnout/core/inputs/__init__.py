"""Input kinds, one module each: its schema under ``input:`` in the route
table, its validation and conversion of rows, its description, its warm-up
sample. Adding a kind is adding its module and naming its class in ``KINDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from turnout.core.inputs.base import InputKind, show
from turnout.core.inputs.tabular import Tabular
from turnout.core.inputs.text import Text

KINDS: dict[str, type[InputKind]] = {kind.name: kind for kind in (Tabular, Text)}
# A route that names no kind has a tabular input.
DEFAULT_KIND = Tabular.name


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("kind", DEFAULT_KIND))
    return getattr(value, "kind", None)


# ``input:`` in the route table: the kind's own schema, chosen by ``kind``
# (pydantic's tagged union over KINDS). Code sees an ``InputKind``.
if TYPE_CHECKING:
    InputSchema = InputKind
else:
    InputSchema = Annotated[
        Union[tuple(Annotated[kind, Tag(name)] for name, kind in KINDS.items())],  # noqa: UP007
        Discriminator(_kind_of),
    ]

__all__ = ["DEFAULT_KIND", "KINDS", "InputKind", "InputSchema", "Tabular", "Text", "show"]
