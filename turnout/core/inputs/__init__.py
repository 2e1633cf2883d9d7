"""Input kinds, one module each: its schema under ``input:`` in the route
table, its validation and conversion of rows, its description, its warm-up
sample. Adding a kind is adding its module and naming its class in ``KINDS``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from turnout.core.inputs.base import InputKind, show
from turnout.core.inputs.columns import Columns
from turnout.core.inputs.image import Image
from turnout.core.inputs.tabular import Tabular
from turnout.core.inputs.tensor import Tensor
from turnout.core.inputs.text import Text

KINDS: dict[str, type[InputKind]] = {kind.name: kind
                                     for kind in (Tabular, Columns, Tensor, Text, Image)}
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




def parse_schema(data: Any) -> InputKind:
    """An input schema from its JSON (a version's ``meta.json``)."""
    schema: InputKind = _adapter().validate_python(data)
    return schema


@functools.cache
def _adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(InputSchema)


__all__ = ["DEFAULT_KIND", "KINDS", "Columns", "Image", "InputKind", "InputSchema", "Tabular", "Tensor",
           "Text", "parse_schema", "show"]
