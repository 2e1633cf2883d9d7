"""The benchmark's scenarios (a to f) and how one figure is measured: the
medians of ``--repeats`` closed-loop runs."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.benchmarks.client import (
    Progress,
    Run,
    closed_loop,
    closed_loop_chained,
    closed_loop_spread,
    open_loop,
)

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
DIGITS_ROW = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8
SENTENCE = "Turnout sends each job down the right track."
SCENARIOS = "abcdefghijklmn"
BODIES: dict[str, dict[str, Any]] = {
    "iris": {"inputs": [IRIS_ROW], "wait": 30},
    "digits-cnn": {"inputs": [DIGITS_ROW], "wait": 30},
    "minilm": {"inputs": [SENTENCE], "wait": 30},
    "ticket-topic": {"inputs": ["I was charged twice for my subscription"], "wait": 30},
}


@dataclass
class Options:
    out: Path
    repeats: int
    duration_s: float
    concurrencies: list[int]
    isolation_s: float
    warmup_s: float
    isolation_rate: float
    progress: bool | None
    scenarios: str


def predict_path(model: str) -> str:
    return f"/v1/models/{model}/predict"


class Bench:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.results: dict[str, Any] = {}

    def measure(self, label: str, url: str | list[str], model: str, concurrency: int,
                duration_s: float | None = None, body: Any = None,
                path: str | None = None) -> dict[str, Any]:
        """Closed-loop runs, ``repeats`` times; the medians of each figure.
        Several URLs (API processes): the callers are dealt over them.
        ``path`` other than the model's v1 predict (v2's infer)."""
        urls = [url] if isinstance(url, str) else url
        runs: list[Run] = []
        # Unrecorded warm-up: connections, caches, and any worker still busy
        # with the previous figure's stragglers.
        path = path or predict_path(model)
        asyncio.run(closed_loop_spread(urls, path, body or BODIES[model],
                                       concurrency, duration_s=self.o.warmup_s))
        for i in range(self.o.repeats):
            bar = Progress(f"{label} c={concurrency} ({i + 1}/{self.o.repeats})",
                           duration_s or self.o.duration_s, self.o.progress)
            runs.append(asyncio.run(closed_loop_spread(
                urls, path, body or BODIES[model], concurrency,
                duration_s=duration_s or self.o.duration_s, progress=bar,
            )))
        return _median(runs) | {"system": label, "model": model, "concurrency": concurrency}


def pipeline_run(bench: Bench, url: str) -> list[dict[str, Any]]:
    """k. The ticket-topic pipeline (minilm on a GPU queue, then ticket-head on
    the CPU queue) in one call, against the client calling the same two
    models one after the other, at 1 and 16 clients."""
    rows = []
    body = BODIES["ticket-topic"]
    for c in (1, 16):
        rows.append(bench.measure("pipeline, one call", url, "ticket-topic", c))
        runs = []
        asyncio.run(closed_loop_chained(url, predict_path("minilm"), body,
                                        predict_path("ticket-head"), c, bench.o.warmup_s))
        for i in range(bench.o.repeats):
            bar = Progress(f"two calls c={c} ({i + 1}/{bench.o.repeats})", bench.o.duration_s,
                           bench.o.progress)
            runs.append(asyncio.run(closed_loop_chained(
                url, predict_path("minilm"), body, predict_path("ticket-head"), c,
                bench.o.duration_s, bar)))
        rows.append(_median(runs) | {"system": "client calls both", "model": "ticket-topic",
                                     "concurrency": c})
    return rows


def _median(runs: list[Run]) -> dict[str, Any]:
    summaries = [r.summary() for r in runs]
    out: dict[str, Any] = {}
    for key in ("throughput_rps", "p50_ms", "p90_ms", "p99_ms", "client_cpu_per_request_us"):
        out[key] = round(statistics.median(s[key] for s in summaries), 3)
    out["requests"] = sum(s["requests"] for s in summaries)
    out["errors"] = sum(s["errors"] for s in summaries)
    out["client_cpu_s"] = round(sum(s["client_cpu_s"] for s in summaries), 3)
    out["wall_s"] = round(sum(s["wall_s"] for s in summaries), 3)
    out["runs"] = len(runs)
    return out


def scenario_a(bench: Bench, url: str) -> list[dict[str, Any]]:
    return [bench.measure("turnout", url, model, 1) for model in ("iris", "digits-cnn", "minilm")]


def scenario_b(bench: Bench, url: str, baselines: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for c in bench.o.concurrencies:
        rows.append(bench.measure("turnout", url, "iris", c))
        for name in ("tutorial", "handwritten"):
            if name in baselines:
                rows.append(bench.measure(name, baselines[name], "iris", c))
    return rows


# The same iris row and minilm sentence as BODIES, as v2 infer bodies.
V2_BODIES: dict[str, dict[str, Any]] = {
    "iris": {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": IRIS_ROW}]},
    "minilm": {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [SENTENCE]}]},
}


def scenario_m(bench: Bench, url: str) -> list[dict[str, Any]]:
    """v2's infer against v1's predict, the same rows, side by side: what the
    Open Inference Protocol's translation costs (both wait for the answer)."""
    rows = []
    for model, concurrencies in (("iris", (1, 32)), ("minilm", (8,))):
        for c in concurrencies:
            rows.append(bench.measure("v1 predict", url, model, c))
            rows.append(bench.measure("v2 infer", url, model, c, body=V2_BODIES[model],
                                      path=f"/v2/models/{model}/infer"))
    return rows


def scenario_c(bench: Bench, floor: str) -> list[dict[str, Any]]:
    return [bench.measure("floor", floor, "iris", c) for c in bench.o.concurrencies]


def scenario_d(bench: Bench, on: str, off: str) -> list[dict[str, Any]]:
    return [
        bench.measure("batching on", on, "digits-cnn", 64),
        bench.measure("batching off", off, "digits-cnn", 64),
    ]


def spread_run(bench: Bench, urls: list[str], label: str) -> list[dict[str, Any]]:
    """iris at 8 and 32 clients on the first API process alone, then dealt
    over all of them (``urls``)."""
    rows = []
    for c in (8, 32):
        rows.append(bench.measure(f"{label}, 1 API", urls[:1], "iris", c))
        rows.append(bench.measure(f"{label}, {len(urls)} APIs", urls, "iris", c))
    return rows


def isolation_run(bench: Bench, url: str, label: str, saturate: bool) -> dict[str, Any]:
    """iris at a steady rate; with ``saturate``, minilm work flooding its
    route's queue at the same time."""

    async def go() -> tuple[Run, Run | None]:
        bar = Progress(f"isolation: {label}", bench.o.isolation_s, bench.o.progress)
        iris = open_loop(url, predict_path("iris"), BODIES["iris"], bench.o.isolation_rate,
                         bench.o.isolation_s, progress=bar)
        if not saturate:
            return await iris, None
        flood_body = {"inputs": [SENTENCE] * 8, "wait": 60}
        flood = closed_loop(url, predict_path("minilm"), flood_body, 16,
                            duration_s=bench.o.isolation_s + 1)
        # The flood starts first and outlasts the iris run.
        flood_task = asyncio.create_task(flood)
        await asyncio.sleep(1.0)
        iris_run = await iris
        return iris_run, await flood_task

    iris_run, flood_run = asyncio.run(go())
    row = iris_run.summary() | {"system": label, "model": "iris", "rate_rps": bench.o.isolation_rate}
    if flood_run is not None:
        row["flood_minilm_rps"] = round(flood_run.throughput, 1)
    return row


def lanes_run(bench: Bench, url: str, label: str, batch_priority: str | None) -> dict[str, Any]:
    """iris at a steady rate; with ``batch_priority``, while a 200,000-row
    iris batch job waits on the same queue in that lane (``low``, its
    default; ``normal``: what one FIFO queue does)."""
    import httpx

    job = None
    if batch_priority is not None:
        rows = [IRIS_ROW] * 200_000
        with httpx.Client(base_url=url, timeout=120) as client:
            job = client.post("/v1/models/iris/batch", json={
                "inputs": rows, "chunk_rows": 100, "priority": batch_priority}).json()
    bar = Progress(f"lanes: {label}", bench.o.isolation_s, bench.o.progress)
    run = asyncio.run(open_loop(url, predict_path("iris"), BODIES["iris"], bench.o.isolation_rate,
                                bench.o.isolation_s, progress=bar))
    row = run.summary() | {"system": label, "model": "iris", "rate_rps": bench.o.isolation_rate}
    if job is not None:
        with httpx.Client(base_url=url, timeout=30) as client:
            started = time.monotonic()
            while (view := client.get(job["status_url"]).json())["status"] not in (
                    "SUCCESS", "FAILURE"):
                time.sleep(0.2)
            row["batch_rows_done_after_run"] = view["rows_done"]
            row["batch_extra_s"] = round(time.monotonic() - started, 2)
    return row


def training_isolation(bench: Bench, url: str) -> list[dict[str, Any]]:
    """iris at a steady rate, idle and then while a digits-cnn training job
    runs on the training lane (started first, cancelled after, so that
    nothing is registered)."""
    import httpx

    rows = [isolation_run(bench, url, "idle", saturate=False)]
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/models/digits-cnn/train",
                      json={"dataset": "digits", "params": {"epochs": 500}})
        r.raise_for_status()
        job = r.json()["job_id"]
        try:
            deadline = time.monotonic() + 120
            # Measured once the job is past its start (a fresh process importing torch).
            while http.get(f"/v1/training/{job}").json()["progress"].get("epoch", 0) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the training job did not start within 120 s")
                time.sleep(0.2)
            before = http.get(f"/v1/training/{job}").json()["progress"]["epoch"]
            row = isolation_run(bench, url, "during training", saturate=False)
            row["training_epochs_meanwhile"] = (
                http.get(f"/v1/training/{job}").json()["progress"]["epoch"] - before)
            rows.append(row)
        finally:
            http.delete(f"/v1/training/{job}")
    return rows


def events_cost(bench: Bench, url: str, broker_url: str, routes: Path) -> list[dict[str, Any]]:
    """iris at concurrency 1 and 32 with monitoring off, then on (workers
    send task events, the router sends task-sent), on one stack: turned on
    and off at run time the way Flower does it (the `enable_events` broadcast,
    and the `turnout:monitoring` key every API process reads)."""
    import redis

    from turnout.core import redis_keys
    from turnout.core.celery_app import make_celery
    from turnout.core.routes import load_routes
    from turnout.core.settings import load_settings

    client = redis.Redis.from_url(broker_url)
    app = make_celery(load_settings(broker_url=broker_url), load_routes(routes))
    rows = []
    try:
        for label, on in (("events off", False), ("events on", True)):
            if on:
                client.set(redis_keys.MONITORING, "bench")
                app.control.enable_events()
            else:
                client.delete(redis_keys.MONITORING)
                app.control.disable_events()
            time.sleep(1.5)  # every API process has read the key by then
            seen = _task_events(client, url, app.conf.broker_url)
            for c in (1, 32):
                rows.append(bench.measure(label, url, "iris", c) | {"task_events_seen": seen})
    finally:
        client.delete(redis_keys.MONITORING)
        app.control.disable_events()
        client.close()
        app.close()
    return rows


def _task_events(client: Any, url: str, broker_url: str) -> list[str]:
    """The task events one request makes now (proof that monitoring is on or off)."""
    import httpx

    from turnout.core.settings import RedisSettings

    db = RedisSettings.from_url(broker_url).db
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"/{db}.celeryev/task.*")
    try:
        httpx.post(url + predict_path("iris"), json=BODIES["iris"], timeout=30)
        seen = set()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                channel = message["channel"]
                seen.add((channel.decode() if isinstance(channel, bytes) else channel)
                         .rsplit("/", 1)[-1])
        return sorted(seen)
    finally:
        pubsub.close()
