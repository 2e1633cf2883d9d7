"""The chaos suite's pipeline transforms (an operator's own functions, as the
route table names them): CPU work before and after the GPU step."""

from __future__ import annotations

from typing import Any


def clip_pixels(rows: list[list[float]]) -> list[list[float]]:
    return [[min(16.0, max(0.0, float(v))) for v in row] for row in rows]


def name_digit(rows: list[Any]) -> list[str]:
    return [f"digit-{int(label)}" for label in rows]
