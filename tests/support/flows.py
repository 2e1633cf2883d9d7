"""Transforms and a combiner for the pipeline tests (an operator's own
``module:function``s, as the route table names them)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any


def clip_pixels(rows: list[list[float]]) -> list[list[float]]:
    """The digits' pixels kept within 0..16 (a CPU pre-processing step)."""
    return [[min(16.0, max(0.0, float(v))) for v in row] for row in rows]


def name_digit(rows: list[Any]) -> list[str]:
    """A digit's label as words (a CPU post-processing step)."""
    return [f"digit-{int(label)}" for label in rows]


def slow_clip(rows: list[list[float]]) -> list[list[float]]:
    time.sleep(1.5)
    return clip_pixels(rows)


def fails(rows: list[Any]) -> list[Any]:
    raise ValueError("this transform always fails")


def first_of(predictions: list[list[Any]]) -> list[Any]:
    """A combiner: the most common answer, ties to the last member."""
    return [Counter(p[r] for p in predictions).most_common(1)[0][0]
            for r in range(len(predictions[0]))]
