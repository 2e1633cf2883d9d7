"""`turnout bench` end to end: against the running test stack (--url), and
every scenario on a stack of its own, in its quick form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Stack
from tests.support.procs import REPO

pytestmark = pytest.mark.integration


def test_bench_against_a_running_stack(stack: Stack, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "turnout", "bench", "--url", stack.url, "--quick", "--scenarios", "ab",
         "--out", str(tmp_path)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "latest.json").read_text())
    rows = results["scenarios"]["a"] + results["scenarios"]["b"]
    assert [r["model"] for r in results["scenarios"]["a"]] == ["iris", "digits-cnn", "minilm"]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows), rows
    assert "turnout" in out.stdout and (tmp_path / "latency.png").exists()


def test_every_scenario_runs_on_its_own_stack(models_dir: Path, tmp_path: Path) -> None:
    env = {"TURNOUT_MODELS_DIR": str(models_dir), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "turnout", "bench", "--quick", "--out", str(tmp_path / "out")],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "latest.json").read_text())
    assert sorted(results["scenarios"]) == ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k",
                                            "l", "m", "n"]
    # An image model: JPEG bodies against the same pixels as JSON numbers.
    n = results["scenarios"]["n"]
    assert [r["system"] for r in n] == ["JPEG body", "JSON numbers"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in n), n
    assert n[0]["request_bytes"] * 20 < n[1]["request_bytes"]
    # v2's infer beside v1's predict, the same rows.
    m = results["scenarios"]["m"]
    assert [(r["system"], r["model"], r["concurrency"]) for r in m] == [
        (system, model, c) for model, cs in (("iris", (1, 32)), ("minilm", (8,))) for c in cs
        for system in ("v1 predict", "v2 infer")]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in m), m
    # The broker's cost, from Redis's own counters: per request, per row, idle.
    broker = results["scenarios"].pop("l")
    assert [r["unit"] for r in broker] == ["second", "request", "request", "row"]
    idle, one, many, rows = broker
    assert idle["commands_per_s"] > 0 and idle["workers"] >= 2
    assert one["commands_per_unit"] > many["commands_per_unit"] > 0  # batching shares the cost
    assert all(r["units_per_redis_core_s"] > 0 for r in (one, many, rows))
    assert "evalsha" in one["top_commands_per_unit"]
    # A pipeline in one call, beside the client calling its two models itself.
    assert [(r["system"], r["concurrency"]) for r in results["scenarios"]["k"]] == [
        ("pipeline, one call", 1), ("client calls both", 1), ("pipeline, one call", 16),
        ("client calls both", 16)]
    # Several API processes, worker-side batching on and off, beside the
    # hand-written queue.
    j = results["scenarios"]["j"]
    assert [r["system"] for r in j] == [
        f"worker batching {m}, {n}" for m in ("on", "off", "only")
        for n in ("1 API", "4 APIs", "1 API", "4 APIs")
    ] + ["handwritten"]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in j), j
    assert [r["system"] for r in results["scenarios"]["i"]] == [
        "idle", "batch queued, lanes", "batch queued, one FIFO"]
    assert all(r["batch_rows_done_after_run"] == 200_000 for r in results["scenarios"]["i"][1:])
    # Your own models: an added ONNX graph served, beside onnxruntime in process.
    assert [r["system"] for r in results["scenarios"]["h"]] == [
        "turnout", "turnout", "turnout", "onnxruntime in process", "tabular check",
        "columns check"]
    g = results["scenarios"]["g"]
    assert [r["system"] for r in g] == ["events off"] * 2 + ["events on"] * 2
    # Monitoring really was off, then on: the router's task-sent, and the
    # worker's own (sent in batches, as task.multi, from its event loop).
    assert g[0]["task_events_seen"] == []
    seen = set(g[2]["task_events_seen"])
    assert "task.sent" in seen and seen - {"task.sent"}, seen
    assert [r["system"] for r in results["scenarios"]["f"]] == ["idle", "during training"]
    assert "training_epochs_meanwhile" in results["scenarios"]["f"][1]
    for rows in results["scenarios"].values():
        assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows), rows
    systems = {r["system"] for r in results["scenarios"]["b"]}
    assert systems == {"turnout", "tutorial", "handwritten"}
    assert all(t["value"] is not None for t in results["targets"])
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == {"latency.png", "batching-isolation.png"}
