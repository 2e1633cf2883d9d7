"""Running a batch that may not fit in device memory: on out-of-memory the
batch is split in halves and each half retried, down to single rows. A row
that does not fit even alone fails by itself; the rows around it still run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from turnout.ml.adapters.base import LoadedModel


class OutOfMemory(Exception):
    """An adapter's own way of saying the device ran out of memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, OutOfMemory | MemoryError):
        return True
    # torch is looked up, never imported: a CPU worker serving scikit-learn
    # models must not load it just to check an exception's type.
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class SplitResult:
    """One entry per row, in order; ``failed`` maps each row that did not fit
    even alone to its out-of-memory error."""

    predictions: list[Any]
    probabilities: list[list[float] | None] | None
    failed: dict[int, str] = field(default_factory=dict)
    passes: int = 0
    splits: int = 0


def predict_splitting(
    model: LoadedModel, rows: list[Any], release: Callable[[], None] = lambda: None
) -> SplitResult:
    """``model.predict(rows)``, halving the batch on out-of-memory.

    ``release`` frees cached device memory between tries (``empty_cache``).
    Errors other than out-of-memory propagate unchanged.
    """
    predictions: list[Any] = [None] * len(rows)
    probabilities: list[list[float] | None] = [None] * len(rows)
    out = SplitResult(predictions, probabilities)
    any_proba = False
    todo = [(0, len(rows))]
    while todo:
        start, end = todo.pop()
        out.passes += 1
        try:
            part = model.predict(rows[start:end])
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            release()
            if end - start == 1:
                out.failed[start] = f"{type(exc).__name__}: {_first_line(exc)}"
                continue
            mid = (start + end) // 2
            out.splits += 1
            # Pushed so that the first half runs first: rows finish in order.
            todo.append((mid, end))
            todo.append((start, mid))
            continue
        predictions[start:end] = part.predictions
        if part.probabilities is not None:
            any_proba = True
            probabilities[start:end] = part.probabilities
    if not any_proba:
        out.probabilities = None
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
