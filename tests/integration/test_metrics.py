"""/metrics on a running stack: the histograms fill with real traffic, and
every series the shipped dashboard and alert rules name is there."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.integration.conftest import Stack
from tests.support.metrics import names, sample
from tests.support.procs import REPO, wait_for

pytestmark = pytest.mark.integration

MONITORING = REPO / "configs" / "monitoring"
_SERIES = re.compile(r"\bturnout_[a-z0-9_]+\b")
_SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def named_series() -> set[str]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in _SERIES.findall(expr)}


def test_every_series_in_the_dashboard_and_rules_is_exported(stack: Stack) -> None:
    wanted = named_series()
    assert len(wanted) >= 20
    stack.http.post("/v1/models/iris/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]], "wait": 10})
    text = stack.http.get("/metrics").text
    exported = names(text)
    missing = set()
    for name in wanted:
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        # A labelled series no request has touched yet is declared (HELP and
        # TYPE) but has no sample: the family's name is there.
        if name not in exported and base not in exported:
            missing.add(name)
    assert not missing, sorted(missing)


def test_the_histograms_and_gauges_fill(stack: Stack) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 3
    for _ in range(5):
        assert stack.http.post("/v1/models/iris/predict",
                               json={"inputs": rows, "wait": 10}).status_code == 200
    submitted = stack.http.post("/v1/models/iris/predict", json={"inputs": rows}).json()
    assert stack.http.get("/v1/models/nope/predict").status_code in (404, 405)
    stack.http.post("/v1/models/nope/predict", json={"inputs": rows})

    def counted() -> str | None:
        text = stack.http.get("/metrics").text
        # The 202 request is timed too, when its result comes back.
        n = sample(text, "turnout_request_duration_seconds_count", model="iris", version="1")
        return text if n is not None and n >= 6 else None

    text = wait_for(counted, 10, "the request histogram to count the 202 too")
    assert submitted["status"] == "PENDING"
    for series in ("turnout_queue_time_seconds_count", "turnout_run_time_seconds_count"):
        assert (sample(text, series, model="iris", version="1") or 0) >= 6
    assert (sample(text, "turnout_batch_rows_sum", model="iris") or 0) >= 18
    assert (sample(text, "turnout_tasks_total", model="iris", status="SUCCESS") or 0) >= 1
    assert (sample(text, "turnout_errors_total", code="404", error="UnknownModel") or 0) >= 1
    assert sample(text, "turnout_worker_up", worker="cpu@test", kind="cpu", device="cpu",
                  host=stack.http.get("/v1/workers").json()["workers"][0]["host"]) == 1
    assert sample(text, "turnout_worker_slots", worker="cpu@test") == 2
    assert (sample(text, "turnout_worker_models_loaded", worker="gpu-cpu@test") or 0) >= 3
    assert sample(text, "turnout_model_live_workers", model="iris", queue="cpu") == 1
    assert sample(text, "turnout_model_live_workers", model="digits-orphan", queue="gpu.3") == 0
    assert sample(text, "turnout_model_time_limit_seconds", model="iris") == 10
    assert sample(text, "turnout_queue_max_depth", queue="cpu") == 10000
