"""The shipped alert rules and dashboard, checked with Prometheus's own
promtool: every rule parses, every alert has a case that fires when its
condition holds and one that stays quiet when it does not
(configs/monitoring/alerts.test.yml), and every dashboard query parses.
A real Prometheus evaluating them against running API processes is scenario
J of ``turnout chaos --cluster`` (tests/integration/test_cluster.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from turnout.benchmarks.chaos.cluster.monitoring import (
    ALERTS,
    MONITORING,
    alert_rules,
    dashboard_queries,
)

REPO = Path(__file__).resolve().parents[2]
CASES = MONITORING / "alerts.test.yml"


def _promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return subprocess.run([promtool, *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_alert_rules_parse() -> None:
    run = _promtool("check", "rules", str(ALERTS))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    run = _promtool("test", "rules", CASES.name)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    fires, quiet = set(), set()
    for case in yaml.safe_load(CASES.read_text())["tests"]:
        for test in case["alert_rule_test"]:
            (fires if test["exp_alerts"] else quiet).add(test["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert fires == names and quiet == names


def test_the_cases_catch_a_broken_rule(tmp_path: Path) -> None:
    """The cases can fail: an alert whose condition is wrong is caught."""
    shutil.copy(CASES, tmp_path / CASES.name)
    broken = ALERTS.read_text().replace("(turnout_model_live_workers) == 0",
                                        "(turnout_model_live_workers) == 1")
    assert broken != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    run = _promtool("test", "rules", CASES.name, cwd=tmp_path)
    assert run.returncode != 0 and "TurnoutNoLiveWorker" in run.stdout + run.stderr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses a rule's expression offline: each query as a
    recording rule (Prometheus itself answers them in scenario J)."""
    queries = dashboard_queries()
    assert len(queries) > 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    run = _promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    (tmp_path / "bad.yml").write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "dashboard:bad", "expr": "sum by (model (rate(x[1m]))"}]}]}))
    assert _promtool("check", "rules", "bad.yml", cwd=tmp_path).returncode != 0


def test_rules_and_dashboard_name_only_metrics_the_api_exports() -> None:
    source = (REPO / "router" / "metrics.py").read_text()
    exported = set(re.findall(r'"(turnout_[a-z_]+)"', source))
    used = set()
    for expr in [rule["expr"] for rule in alert_rules()] + [e for _, e in dashboard_queries()]:
        for name in re.findall(r"\bturnout_[a-z_]+", expr):
            used.add(re.sub(r"_(bucket|sum|count|total)$", "", name))
    assert used and used <= exported, sorted(used - exported)
