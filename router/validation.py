"""Checks a request's ``inputs`` against a route's input schema.

Pure functions: they take the decoded JSON and the route, and either return the
rows to send or raise ``InvalidInput`` with a message that names the row (and
the column) and what was wrong with it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from turnout.core.errors import InvalidInput
from turnout.core.routes import Route

_SHOWN = 40  # how much of an offending value a message quotes


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def validate_inputs(route: Route, inputs: Any, max_rows: int | None = None) -> list[Any]:
    """Return the rows of ``inputs`` if they fit ``route``'s schema (and at most
    ``max_rows`` of them; the route's ``max_rows`` by default)."""
    limit = route.max_rows if max_rows is None else max_rows
    if not isinstance(inputs, list):
        raise InvalidInput(f"inputs: expected a list of rows, got {type(inputs).__name__}")
    if not inputs:
        raise InvalidInput("inputs: no rows given; send at least one")
    if len(inputs) > limit:
        raise InvalidInput(
            f"inputs: {len(inputs)} rows, but model {route.name!r} takes at most "
            f"{limit} per request"
        )
    if route.input.kind == "text":
        return _text_rows(route, inputs)
    return _tabular_rows(route, inputs)


def _tabular_rows(route: Route, inputs: list[Any]) -> list[list[float]]:
    width = route.input.width
    assert width is not None  # the route table guarantees it for tabular inputs
    rows: list[list[float]] = []
    for i, row in enumerate(inputs):
        if not isinstance(row, list):
            raise InvalidInput(
                f"inputs[{i}]: expected a list of {width} numbers, got {_show(row)}"
            )
        if len(row) != width:
            raise InvalidInput(
                f"inputs[{i}]: expected {width} numbers for model {route.name!r}, "
                f"got {len(row)}"
            )
        out: list[float] = []
        for j, value in enumerate(row):
            # bool is an int in Python, but true/false in a feature row is a mistake.
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidInput(f"inputs[{i}][{j}]: expected a number, got {_show(value)}")
            try:
                number = float(value)
            except OverflowError:
                raise InvalidInput(
                    f"inputs[{i}][{j}]: the number is too large for a float"
                ) from None
            if not math.isfinite(number):
                raise InvalidInput(
                    f"inputs[{i}][{j}]: expected a finite number, got {_show(value)}"
                )
            out.append(number)
        rows.append(out)
    return rows


def _text_rows(route: Route, inputs: list[Any]) -> list[str]:
    limit = route.input.max_length
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidInput(f"inputs[{i}]: expected a string, got {_show(text)}")
        if not text.strip():
            raise InvalidInput(f"inputs[{i}]: the string is empty")
        if len(text) > limit:
            raise InvalidInput(
                f"inputs[{i}]: {len(text)} characters, but model {route.name!r} takes "
                f"at most {limit}"
            )
    return inputs


def _json_object(raw: bytes, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise InvalidInput(
            f'body: expected a JSON object such as {{"inputs": [...]}}, got {type(body).__name__}'
        )
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        optional = " and ".join(repr(k) for k in allowed[1:])
        raise InvalidInput(
            f"body: unknown key {unknown[0]!r}; expected 'inputs' and optionally {optional}"
        )
    if "inputs" not in body:
        raise InvalidInput("body: 'inputs' is missing; send a list of rows")
    return body


def parse_batch_body(raw: bytes, max_chunk_rows: int) -> tuple[Any, int | None]:
    """Decode a batch job's body into (inputs, rows per chunk or None)."""
    body = _json_object(raw, ("inputs", "chunk_rows"))
    chunk = body.get("chunk_rows")
    if chunk is None:
        return body["inputs"], None
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= max_chunk_rows:
        raise InvalidInput(
            f"chunk_rows: expected a whole number from 1 to {max_chunk_rows}, got {_show(chunk)}"
        )
    return body["inputs"], chunk


def parse_predict_body(raw: bytes, max_wait_s: float) -> tuple[Any, float]:
    """Decode a predict request's body into (inputs, wait seconds)."""
    body = _json_object(raw, ("inputs", "wait"))
    wait = body.get("wait", 0)
    if wait is None:
        wait = 0
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise InvalidInput(f"wait: expected a number of seconds, got {_show(wait)}")
    if not math.isfinite(wait) or wait < 0:
        raise InvalidInput(f"wait: expected a number of seconds from 0 to {max_wait_s:g}, got {wait}")
    if wait > max_wait_s:
        raise InvalidInput(f"wait: at most {max_wait_s:g} seconds, got {wait:g}")
    return body["inputs"], float(wait)
