"""`turnout chaos --cluster` as a program: the rehearsal's hosts made of
network namespaces (root), Redis on TLS with a CA made for the run, two of
its scenarios in their quick form (D: the wrong CA and plain text refused;
B: an API process killed under clients that hold both URLs; J: a real
Prometheus scraping both API hosts, where Debian's is installed), its JSON,
and every host gone afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import REPO
from turnout.benchmarks.chaos.cluster.monitoring import alert_rules
from turnout.benchmarks.chaos.cluster.monitoring import missing as prometheus_missing
from turnout.benchmarks.chaos.cluster.stack import missing

pytestmark = pytest.mark.integration


def test_the_rehearsal_runs_two_scenarios_and_cleans_up(models_dir: Path, tmp_path: Path) -> None:
    why = missing()
    if why:
        pytest.skip(f"the cluster rehearsal cannot run here: {why}")
    out = tmp_path / "out"
    scenarios = "D,B" if prometheus_missing() else "D,B,J"
    run = subprocess.run(
        [sys.executable, "-m", "turnout", "chaos", "--cluster", "--quick", "--scenarios", scenarios,
         "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TURNOUT_MODELS_DIR": str(models_dir)},
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    result = json.loads((out / "chaos-cluster.json").read_text())
    tls, api, *monitoring = result["scenarios"]
    assert tls["ok"] and tls["wrong_ca"]["exit"] == 2 and tls["plain_port"] == "0"
    assert "does not verify against the trusted CA" in tls["wrong_ca"]["said"]
    assert api["ok"] and api["failed_requests"] == 0 and api["tasks_no_caller_got"] == 0
    assert api["completed"] > 100 and "api1" in api["restarts"]
    for prometheus in monitoring:
        assert prometheus["ok"] and prometheus["query_errors"] == [] and prometheus["rules"] == len(alert_rules())
        assert prometheus["alert_active_after_s"] is not None
    assert result["hosts"]["redis"] == "10.77.0.2"
    left = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True)
    assert "tn-" not in left.stdout
