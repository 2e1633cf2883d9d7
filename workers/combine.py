"""How an ensemble's combine step makes one answer per row from its members':
``vote`` (the most common label; a tie goes to the member listed first),
``mean`` (numbers or vectors, element by element), ``concat`` (each member's
answer side by side), or an operator's ``module:function``, called with the
members' predictions (one list per member, one entry per row) and answering
one prediction per row. Probabilities, where every member has them, are
averaged for ``vote`` and ``mean``."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any


class CombineError(Exception):
    """The members' answers cannot be combined as asked."""


@cache
def load_callable(path: str) -> Callable[..., Any]:
    """The operator's ``module:function`` (from the route table, which the
    operator trusts as they trust their adapters)."""
    module, _, name = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise CombineError(f"cannot import {path!r}: {exc}") from None
    if not callable(found):
        raise CombineError(f"{path!r} is not a function")
    return found


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _vote(answers: list[Any]) -> Any:
    counts = Counter(_key(a) for a in answers)
    best = max(counts.values())
    return next(a for a in answers if counts[_key(a)] == best)


def _number(value: Any, member: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CombineError(f"mean: member {member} answered {value!r}, not a number")
    return float(value)


def _mean(answers: list[Any]) -> Any:
    if all(isinstance(a, list) for a in answers):
        widths = {len(a) for a in answers}
        if len(widths) != 1:
            raise CombineError(f"mean: the members' vectors differ in length ({sorted(widths)})")
        return [sum(_number(a[j], m) for m, a in enumerate(answers)) / len(answers)
                for j in range(widths.pop())]
    return sum(_number(a, m) for m, a in enumerate(answers)) / len(answers)


def _concat(answers: list[Any]) -> list[Any]:
    out: list[Any] = []
    for a in answers:
        if isinstance(a, list):
            out.extend(a)
        else:
            out.append(a)
    return out


_BUILT_IN: dict[str, Callable[[list[Any]], Any]] = {"vote": _vote, "mean": _mean,
                                                    "concat": _concat}


def combine(how: str, predictions: list[list[Any]],
            probabilities: list[list[Any] | None]) -> tuple[list[Any], list[Any] | None]:
    """One request's answer from its members' (``predictions[m][row]``):
    (predictions, probabilities or None)."""
    rows = {len(p) for p in predictions}
    if len(rows) != 1:
        raise CombineError(f"the members answered different numbers of rows ({sorted(rows)})")
    n = rows.pop()
    if how in _BUILT_IN:
        one = _BUILT_IN[how]
        out = [one([p[r] for p in predictions]) for r in range(n)]
    else:
        out = list(load_callable(how)(predictions))
        if len(out) != n:
            raise CombineError(f"{how} answered {len(out)} rows for {n}")
    probs = None
    if how in ("vote", "mean") and probabilities and all(p is not None for p in probabilities):
        try:
            probs = [_mean([p[r] for p in probabilities if p is not None]) for r in range(n)]
        except (CombineError, IndexError, TypeError):
            probs = None  # members with different classes: no average of them
    return out, probs
