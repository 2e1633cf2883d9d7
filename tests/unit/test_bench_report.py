"""The benchmark's report: targets as ratios, the table, the charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from turnout.benchmarks import report
from turnout.benchmarks.client import Run


def row(system: str, c: int, rps: float, p50: float, p99: float, model: str = "iris") -> dict[str, Any]:
    return {"system": system, "model": model, "concurrency": c, "throughput_rps": rps, "p50_ms": p50,
            "p99_ms": p99, "errors": 0, "client_cpu_per_request_us": 40.0}


SCENARIOS = {
    "b": [row("turnout", 1, 500, 1.8, 3), row("tutorial", 1, 280, 3.6, 6), row("handwritten", 1, 900, 1.0, 2),
          row("turnout", 32, 3000, 9, 40), row("tutorial", 32, 500, 60, 160), row("handwritten", 32, 3100, 9, 90)],
    "c": [row("floor", 1, 1800, 0.5, 0.8), row("floor", 32, 2400, 12, 20)],
    "d": [row("batching on", 64, 3000, 20, 50, "digits-cnn"), row("batching off", 64, 400, 150, 200, "digits-cnn")],
    "e": [row("idle", 0, 100, 3, 4), row("separate queues", 0, 100, 4, 7), row("one shared queue", 0, 99, 50, 480)],
}


def test_targets_are_ratios_within_the_run() -> None:
    found = {t["target"]: t for t in report.targets(SCENARIOS)}
    assert found["iris c=1 p50 / hand-written queue p50"] == {"target": "iris c=1 p50 / hand-written queue p50", "value": 1.8, "goal": "<= 2.0", "met": True}
    assert found["iris c=1 p50 / tutorial .get() p50"]["value"] == 0.5
    assert found["iris c=32 throughput / tutorial"]["value"] == 6.0
    assert found["iris c=32 p99 (ms)"]["met"] is True
    assert found["iris c=32 throughput / no-queue floor (stretch)"]["value"] == 1.25
    assert found["digits-cnn c=64 throughput, batching on / off"]["value"] == 7.5
    iso = found["iris p99 under a saturated GPU queue / idle p99"]
    assert (iso["value"], iso["met"]) == (1.75, True)
    assert found["the same, with every model on one shared queue"]["value"] == 120.0


def test_a_missing_scenario_leaves_its_targets_unmeasured() -> None:
    found = {t["target"]: t for t in report.targets({"b": SCENARIOS["b"]})}
    assert found["digits-cnn c=64 throughput, batching on / off"] == {
        "target": "digits-cnn c=64 throughput, batching on / off", "value": None, "goal": ">= 5.0", "met": None}


def test_the_table_and_charts(tmp_path: Path) -> None:
    results = {
        "machine": {"cpus": 2, "cpu": "test cpu", "memory_gib": 24, "gpus": 0, "python": "3.11"},
        "started": "2026-11-21T00:00:00Z",
        "options": {"repeats": 3, "duration_s": 2.0},
        "scenarios": SCENARIOS,
        "targets": report.targets(SCENARIOS),
    }
    text = report.table(results)
    assert "2 CPUs (test cpu)" in text and "medians of 3 runs" in text
    target = next(line for line in text.splitlines() if line.startswith("iris c=32 throughput / tutorial"))
    assert target.split()[-3:] == [">=", "4.0", "yes"] and " 6 " in target
    written = report.charts(results, tmp_path)
    assert [p.name for p in written] == ["latency.png", "batching-isolation.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_percentiles_of_a_run() -> None:
    run = Run(latencies_ms=[float(i) for i in range(1, 101)], wall_s=2.0)
    assert (run.percentile(50), run.percentile(99), run.throughput) == (51.0, 99.0, 50.0)
