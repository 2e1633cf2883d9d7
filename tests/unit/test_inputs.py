"""Input kinds: each is one module, registered once, and holds all it means."""

from __future__ import annotations

import pytest

from turnout.core.errors import ConfigError, InvalidInput
from turnout.core.inputs import KINDS, Tabular, Text
from turnout.core.routes import parse_routes


def _route(input_: dict) -> object:
    table = parse_routes({"models": {"m": {"framework": "sklearn", "version": 1, "queue": "cpu",
                                           "input": input_}}})
    return table.routes["m"].input


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_describes_itself_and_accepts_its_own_warm_up(name: str) -> None:
    schema = {"tabular": {"kind": "tabular", "width": 3}, "text": {"kind": "text"},
              "columns": {"kind": "columns", "columns": [{"name": "a", "type": "number"},
                                                         {"name": "b", "type": "string"}]},
              "tensor": {"kind": "tensor", "inputs": [{"name": "x", "dtype": "float32",
                                                       "shape": [2, -1]}]},
              "image": {"kind": "image", "size": [4, 6], "channels": 1}}[name]
    kind = _route(schema)
    assert isinstance(kind, KINDS[name])
    assert kind.describe()["kind"] == name  # type: ignore[attr-defined]
    sample = kind.warm_up()  # type: ignore[attr-defined]
    # The warm-up is what a worker receives; an image's travels as its base64.
    sent = [{"b64": s} for s in sample] if name == "image" else sample
    assert kind.rows("m", sent) == sample  # type: ignore[attr-defined]


def test_a_route_without_a_kind_is_tabular_and_an_unknown_kind_is_named() -> None:
    assert isinstance(_route({"width": 4}), Tabular)
    assert isinstance(_route({"kind": "text", "max_length": 10}), Text)
    with pytest.raises(ConfigError, match="'audio'.*'tabular', 'columns', 'tensor', 'text', 'image'"):
        _route({"kind": "audio"})
    # A field of another kind is a typo here.
    with pytest.raises(ConfigError, match=r"models\.m\.input\.max_length: unknown key"):
        _route({"kind": "tabular", "width": 4, "max_length": 5})


def test_each_kind_names_the_row_that_is_wrong() -> None:
    with pytest.raises(InvalidInput, match=r"inputs\[1\]\[0\]: expected a number"):
        Tabular(width=1).rows("m", [[1], ["x"]])
    with pytest.raises(InvalidInput, match=r"inputs\[0\]: 11 characters, but model 'm' takes at most 10"):
        Text(max_length=10).rows("m", ["x" * 11])


def test_an_artifact_of_another_width_is_refused_by_the_kind() -> None:
    assert Tabular(width=4).mismatch("m", {"kind": "tabular", "width": 4}) is None
    assert Tabular(width=4).mismatch("m", {"width": 64}) == \
        "model 'm': the route says input width 4, the artifact takes 64"
