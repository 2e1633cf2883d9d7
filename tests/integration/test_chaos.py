"""`turnout chaos` as a program: its own stack, two scenarios in their quick
form, a table, JSON and a pass (0 lost, no second result)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO

pytestmark = pytest.mark.integration


def test_chaos_quick_runs_and_counts_every_job(models_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "turnout", "chaos", "--quick", "--scenarios", "4,9", "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TURNOUT_MODELS_DIR": str(models_dir)},
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "results>1" in run.stdout
    rows = json.loads((out / "chaos.json").read_text())["scenarios"]
    assert [r["scenario"][0] for r in rows] == ["4", "9"]
    for row in rows:
        assert row["ok"] and row["lost"] == 0 and row["results_beyond_one"] == 0, row
        assert row["accepted"] >= 2
    long_jobs, revoke = rows
    assert long_jobs["runs_beyond_one"] == 0  # 5 s jobs, a 2 s visibility timeout
    assert revoke["revoked_runs"] == 0
