"""The suite's verdicts and its table, shared by ``turnout chaos`` and the
several-machines rehearsal (``--cluster``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from turnout.benchmarks.chaos.tally import Options

COLUMNS = (
    ("scenario", "scenario", 38), ("submitted", "submitted", 9), ("accepted", "accepted", 8),
    ("refused", "refused", 14), ("completed", "completed", 9), ("lost", "lost", 4),
    ("runs_beyond_one", "runs>1", 6), ("results_beyond_one", "results>1", 9),
    ("second_results_dropped", "dropped", 7), ("recovery_s", "recovery s", 10), ("ok", "ok", 4),
)


def failures(row: dict[str, Any]) -> list[str]:
    """What a scenario failed, each in words with its figure; none when it passed."""
    out = []
    if row["lost"] and not row.get("loss_is_the_measure"):
        out.append(f"{row['lost']} job(s) lost")
    if row["results_beyond_one"]:
        out.append(f"{row['results_beyond_one']} job(s) with a result beyond one")
    if row["unexpected"]:
        out.append(f"{row['unexpected']} job(s) ended in an unexpected state")
    return out + list(row.get("failed_checks") or [])


def passed(row: dict[str, Any]) -> bool:
    return not failures(row)


def table(rows: list[dict[str, Any]]) -> str:
    head = " ".join(f"{title:<{w}}" for _, title, w in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for key, _, w in COLUMNS:
            value = row.get(key)
            if key == "refused":
                value = ",".join(f"{k}:{v}" for k, v in (value or {}).items()) or "-"
            elif key == "ok":
                value = "yes" if passed(row) else "NO"
            elif value is None:
                value = "-"
            cells.append(f"{value!s:<{w}}")
        lines.append(" ".join(cells))
    for row in rows:
        for failure in failures(row):
            lines.append(f"NO: {row['scenario']}: {failure}")
    return "\n".join(lines)


def run_one(scenario: Callable[[Any, Options], dict[str, Any]], key: str, stack: Any,
            options: Options) -> dict[str, Any]:
    """One scenario's row; a scenario that breaks is a failed row that says why."""
    try:
        return scenario(stack, options)
    except Exception as exc:  # noqa: BLE001 - reported in the row, not raised
        return {"scenario": key, "submitted": 0, "accepted": 0, "completed": 0, "lost": 0,
                "unexpected": 1, "results_beyond_one": 0,
                "error": f"{type(exc).__name__}: {exc}", "timeline": {"results_t": []}}
