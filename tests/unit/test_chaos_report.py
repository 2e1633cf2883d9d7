"""`turnout chaos`'s table says which check a failed scenario failed, and by how much."""

from __future__ import annotations

from typing import Any

from turnout.benchmarks.chaos.report import failures, passed, table
from turnout.benchmarks.chaos.tally import check


def _row(**changes: Any) -> dict[str, Any]:
    row = {"scenario": "1 gpu worker SIGKILL x2 in a batch", "submitted": 40, "accepted": 40,
           "refused": {}, "completed": 40, "lost": 0, "unexpected": 0, "runs_beyond_one": 2,
           "results_beyond_one": 0, "second_results_dropped": 0, "recovery_s": 17.8}
    return {**row, **changes}


def test_a_passing_scenario_says_yes_and_nothing_else() -> None:
    row = _row()
    check(row, True, "never shown")
    assert passed(row) and failures(row) == []
    assert "NO" not in table([row]) and "never shown" not in table([row])


def test_a_failed_scenario_names_each_failed_check_with_its_figure() -> None:
    row = _row(lost=1)
    check(row, False, "kill -> result took 12.4 s, over its 10 s bound (each: [6.1, 12.4])")
    assert not passed(row)
    assert failures(row) == ["1 job(s) lost",
                             "kill -> result took 12.4 s, over its 10 s bound (each: [6.1, 12.4])"]
    text = table([row])
    assert "NO: 1 gpu worker SIGKILL x2 in a batch: 1 job(s) lost" in text
    assert "over its 10 s bound" in text
