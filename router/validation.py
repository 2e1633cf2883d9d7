"""Checks a request's ``inputs`` against a route's input schema.

Pure functions: they take the decoded JSON and the route, and either return the
rows to send or raise ``InvalidInput`` with a message that names the row (and
the column) and what was wrong with it. What a row must be is the input kind's
(turnout.core.inputs); the request's shape is checked here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from turnout.core.errors import InvalidImage, InvalidInput
from turnout.core.inputs import InputKind, show
from turnout.core.redis_keys import DEFAULT_LANE, LANES
from turnout.core.routes import Route


def validate_inputs(
    route: Route, inputs: Any, max_rows: int | None = None, schema: InputKind | None = None
) -> list[Any]:
    """Return the rows of ``inputs`` if they fit ``schema`` (the serving
    version's; the route's by default), at most ``max_rows`` of them (the
    route's ``max_rows`` by default)."""
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
    return (schema or route.input).rows(route.name, inputs)


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
        optional = ", ".join(repr(k) for k in allowed[1:])
        raise InvalidInput(
            f"body: unknown key {unknown[0]!r}; expected 'inputs' and optionally {optional}"
        )
    if "inputs" not in body:
        raise InvalidInput("body: 'inputs' is missing; send a list of rows")
    return body


def parse_priority(body: dict[str, Any], default: str) -> str:
    """The body's ``priority`` (a lane), or ``default``."""
    priority = body.get("priority", default)
    if priority is None:
        return default
    if priority not in LANES:
        raise InvalidInput(
            f"priority: expected one of {', '.join(repr(x) for x in LANES)}, got {show(priority)}"
        )
    return str(priority)


_MAX_TIMEOUT_S = 24 * 3600.0
# Batch jobs wait in the low lane unless they ask otherwise.
BATCH_LANE = "low"


def parse_timeout(body: dict[str, Any]) -> float | None:
    """The body's ``timeout_s``: seconds from its arrival within which it must
    start, or None."""
    timeout = body.get("timeout_s")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or not 0 < timeout <= _MAX_TIMEOUT_S:
        raise InvalidInput(
            f"timeout_s: expected a number of seconds above 0 and at most {_MAX_TIMEOUT_S:g}, "
            f"got {show(timeout)}")
    return float(timeout)


@dataclass(frozen=True)
class Asked:
    """What a body asks for besides its rows."""

    priority: str
    timeout_s: float | None = None


def parse_batch_body(raw: bytes, max_chunk_rows: int) -> tuple[Any, int | None, Asked]:
    """Decode a batch job's body into (inputs, rows per chunk or None, its
    priority, ``low`` by default so that batch jobs never hold up interactive
    requests, and timeout)."""
    body = _json_object(raw, ("inputs", "chunk_rows", "priority", "timeout_s"))
    asked = Asked(parse_priority(body, BATCH_LANE), parse_timeout(body))
    chunk = body.get("chunk_rows")
    if chunk is None:
        return body["inputs"], None, asked
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= max_chunk_rows:
        raise InvalidInput(
            f"chunk_rows: expected a whole number from 1 to {max_chunk_rows}, got {show(chunk)}"
        )
    return body["inputs"], chunk, asked


def parse_predict_body(raw: bytes, max_wait_s: float) -> tuple[Any, float, Asked]:
    """Decode a predict request's body into (inputs, wait seconds, its
    priority and timeout)."""
    return predict_fields(_json_object(raw, ("inputs", "wait", "priority", "timeout_s")),
                          max_wait_s)


# A predict body that is an image itself, and how its options come instead.
IMAGE_TYPES = ("image/png", "image/jpeg")


def predict_options(query: str) -> dict[str, Any]:
    """``wait``, ``priority`` and ``timeout_s`` from a query string, for a body
    that is not JSON (a raw image, a multipart form)."""
    from urllib.parse import parse_qsl

    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in PREDICT_OPTIONS:
            raise InvalidInput(f"unknown query parameter {key!r}; a predict takes wait, "
                               "priority and timeout_s")
        out[key] = predict_option(key, value)
    return out


PREDICT_OPTIONS = ("wait", "priority", "timeout_s")


def predict_option(key: str, value: str) -> Any:
    """One option given as text (a query parameter, a form field): the
    priority as it is, the others as seconds; checked after as JSON's are."""
    if key == "priority":
        return value
    try:
        return float(value)
    except ValueError:
        raise InvalidInput(f"{key}: expected a number of seconds, got {show(value)}") from None


def image_failure(view: dict[str, Any]) -> InvalidImage | None:
    """A finished task that failed on an image only its worker could find
    bad (``InvalidImage``): bad input all the same, for v1 and v2 alike."""
    error = str(view.get("error") or "")
    if view.get("status") == "FAILURE" and error.startswith("InvalidImage: "):
        return InvalidImage(error.removeprefix("InvalidImage: "))
    return None


def predict_fields(body: dict[str, Any], max_wait_s: float) -> tuple[Any, float, Asked]:
    """(inputs, wait, asked) from a predict body's fields, however it came."""
    asked = Asked(parse_priority(body, DEFAULT_LANE), parse_timeout(body))
    wait = body.get("wait", 0)
    if wait is None:
        wait = 0
    if isinstance(wait, bool) or not isinstance(wait, int | float):
        raise InvalidInput(f"wait: expected a number of seconds, got {show(wait)}")
    if not math.isfinite(wait) or wait < 0:
        raise InvalidInput(f"wait: expected a number of seconds from 0 to {max_wait_s:g}, got {wait}")
    if wait > max_wait_s:
        raise InvalidInput(f"wait: at most {max_wait_s:g} seconds, got {wait:g}")
    return body["inputs"], float(wait), asked
