"""``turnout bench``: what Turnout costs against running the model in-process,
and what its queues buy.

It starts its own stack (a Redis, Turnout's workers and API, and the
baselines of ``benchmarks.baselines``), or measures a running one with
``--url`` (scenarios a and b only). Scenarios:

  a  latency at concurrency 1, per model
  b  iris throughput and p50/p99 at concurrency 1, 8, 32, 128, against the
     tutorial Celery design and a hand-written Redis queue
  c  the floor: iris called in-process behind the same HTTP server
  d  micro-batching on against off: digits-cnn at concurrency 64
  e  isolation: iris at a steady rate while the GPU queue is saturated with
     minilm work, with Turnout's separate queues against the same workers all
     on one shared queue

Every figure is the median of ``--repeats`` runs; ratios compare runs made
side by side in the same invocation, on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks import report
from benchmarks.client import Progress, Run, closed_loop, open_loop
from benchmarks.stacks import Procs, free_port, python, start_redis, wait_http, wait_workers

REPO = Path(__file__).resolve().parents[1]
IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
DIGITS_ROW = [0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0] * 8
SENTENCE = "Turnout sends each job down the right track."
BODIES: dict[str, dict[str, Any]] = {
    "iris": {"inputs": [IRIS_ROW], "wait": 30},
    "digits-cnn": {"inputs": [DIGITS_ROW], "wait": 30},
    "minilm": {"inputs": [SENTENCE], "wait": 30},
}
SCENARIOS = "abcde"


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

    def measure(self, label: str, url: str, model: str, concurrency: int,
                duration_s: float | None = None, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Closed-loop runs, ``repeats`` times; the medians of each figure."""
        runs: list[Run] = []
        # Unrecorded warm-up: connections, caches, and any worker still busy
        # with the previous figure's stragglers.
        asyncio.run(closed_loop(url, predict_path(model), body or BODIES[model], concurrency,
                                duration_s=self.o.warmup_s))
        for i in range(self.o.repeats):
            bar = Progress(f"{label} c={concurrency} ({i + 1}/{self.o.repeats})",
                           duration_s or self.o.duration_s, self.o.progress)
            runs.append(asyncio.run(closed_loop(
                url, predict_path(model), body or BODIES[model], concurrency,
                duration_s=duration_s or self.o.duration_s, progress=bar,
            )))
        return _median(runs) | {"system": label, "model": model, "concurrency": concurrency}


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


# -- the stacks -----------------------------------------------------------------


def _routes_variant(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(source.read_text())
    for route in data["models"].values():
        change(route)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def _no_batching(route: dict[str, Any]) -> None:
    route.pop("max_batch", None)
    route.pop("max_delay_ms", None)


def _one_queue(route: dict[str, Any]) -> None:
    route["queue"] = "cpu"
    route.pop("fallback", None)
    route.pop("devices", None)


class Stack:
    """The processes of one run, on one embedded Redis."""

    def __init__(self, folder: Path) -> None:
        from router.settings import load_settings

        self.folder = folder
        self.settings = load_settings()
        self.redis, self.broker = start_redis(folder)
        self.procs = Procs(folder, {
            **os.environ,
            "TURNOUT_BROKER_URL": self.broker.url,
            "TURNOUT_HOME": str(folder / "home"),
            "TURNOUT_MODELS_DIR": str(self.settings.models_dir),
            "PYTHONUNBUFFERED": "1",
            "BENCH_BROKER_URL": self.broker.url,
            "BENCH_MODELS_DIR": str(self.settings.models_dir),
        })

    def turnout_cmd(self, *args: str) -> list[str]:
        return [*python(), "-m", "router", *args]

    def build_models(self) -> None:
        import subprocess

        subprocess.run(self.turnout_cmd("models", "build", "--missing"), check=True,
                       env=self.procs.env)

    def api(self, name: str, routes: Path) -> str:
        port = free_port()
        proc = self.procs.spawn(name, self.turnout_cmd("api", "--port", str(port)),
                                env={"TURNOUT_ROUTES_FILE": str(routes)})
        url = f"http://127.0.0.1:{port}"
        wait_http(url, proc, path="/readyz")
        return url

    def turnout(self, routes: Path, shared: bool = False) -> tuple[str, list[str]]:
        """Turnout's workers (a CPU worker and one GPU worker per device, or one
        on the CPU) and an API; with ``shared``, every worker on the cpu queue."""
        from workers.gpu.nvml import device_count

        env = {"TURNOUT_ROUTES_FILE": str(routes)}
        tag = "shared" if shared else "bench"
        names = [f"cpu@{tag}"]
        self.procs.spawn(names[0], self.turnout_cmd("worker", "cpu", "--name", names[0]), env=env)
        gpus, _ = device_count()
        devices = [str(i) for i in range(gpus)] or ["cpu"]
        for device in devices:
            name = f"gpu{device}@{tag}" if device != "cpu" else f"gpu-cpu@{tag}"
            argv = ["worker", "gpu", "--device", device, "--name", name]
            if shared:
                argv += ["--queues", "cpu"]
            self.procs.spawn(name, self.turnout_cmd(*argv), env=env)
            names.append(name)
        url = self.api(f"api-{tag}", routes)
        wait_workers(url, len(names))
        return url, names

    def baselines(self) -> dict[str, str]:
        urls = {}
        for kind in ("floor", "tutorial", "handwritten"):
            port = free_port()
            env = {"BENCH_PORT": str(port)}
            proc = self.procs.spawn(f"{kind}-api", [*python(), "-m", "benchmarks.baselines", kind, "api"], env=env)
            urls[kind] = f"http://127.0.0.1:{port}"
            if kind == "tutorial":
                self.procs.spawn("tutorial-worker", [
                    *python(), "-m", "celery", "-A", "benchmarks.baselines", "worker",
                    "-c", "2", "-Q", "tutorial", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-l", "WARNING",
                ], env={"BENCH_TUTORIAL": "1"})
            if kind == "handwritten":
                for i in range(2):
                    self.procs.spawn(f"handwritten-worker-{i}",
                                     [*python(), "-m", "benchmarks.baselines", kind, "worker"])
            wait_http(urls[kind], proc, path="/docs")
        return urls

    def close(self) -> None:
        self.procs.stop()
        self.redis.stop()


# -- the scenarios ------------------------------------------------------------------


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


def scenario_c(bench: Bench, floor: str) -> list[dict[str, Any]]:
    return [bench.measure("floor", floor, "iris", c) for c in bench.o.concurrencies]


def scenario_d(bench: Bench, on: str, off: str) -> list[dict[str, Any]]:
    return [
        bench.measure("batching on", on, "digits-cnn", 64),
        bench.measure("batching off", off, "digits-cnn", 64),
    ]


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


def machine() -> dict[str, Any]:
    from workers.gpu.nvml import device_count

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    except (OSError, ValueError, IndexError):
        pass
    gpus, why = device_count()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "gpus": gpus,
        "gpu_note": why,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(options: Options, url: str | None) -> dict[str, Any]:
    bench = Bench(options)
    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {"repeats": options.repeats, "duration_s": options.duration_s,
                    "concurrencies": options.concurrencies, "url": url},
        "scenarios": {},
    }
    sc = results["scenarios"]
    wanted = set(options.scenarios)
    if url is not None:
        skipped = sorted(wanted - {"a", "b"})
        if skipped:
            print(f"bench: with --url only scenarios a and b run; skipping {','.join(skipped)}",
                  file=sys.stderr)
        if "a" in wanted:
            sc["a"] = scenario_a(bench, url)
        if "b" in wanted:
            sc["b"] = scenario_b(bench, url, {})
        return results

    folder = Path(tempfile.mkdtemp(prefix="turnout-bench-"))
    stack = Stack(folder)
    try:
        say(f"starting Redis, Turnout and the baselines (logs in {folder})")
        stack.build_models()
        routes = stack.settings.routes_file
        turnout_url, _ = stack.turnout(routes)
        baselines = stack.baselines() if wanted & {"b", "c"} else {}
        if "a" in wanted:
            sc["a"] = scenario_a(bench, turnout_url)
        if "b" in wanted:
            sc["b"] = scenario_b(bench, turnout_url, baselines)
        if "c" in wanted:
            sc["c"] = scenario_c(bench, baselines["floor"])
        stack.procs.stop([p.name for p in stack.procs.procs
                          if p.name.startswith(("floor", "tutorial", "handwritten"))])
        if "d" in wanted:
            off = stack.api("api-nobatch", _routes_variant(routes, folder / "routes-nobatch.yaml", _no_batching))
            sc["d"] = scenario_d(bench, turnout_url, off)
        if "e" in wanted:
            sc["e"] = [isolation_run(bench, turnout_url, "idle", saturate=False),
                       isolation_run(bench, turnout_url, "separate queues", saturate=True)]
            stack.procs.stop()
            shared_routes = _routes_variant(routes, folder / "routes-shared.yaml", _one_queue)
            shared_url, _ = stack.turnout(shared_routes, shared=True)
            sc["e"].append(isolation_run(bench, shared_url, "one shared queue", saturate=True))
    finally:
        stack.close()
    results["targets"] = report.targets(sc)
    return results


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="measure a running Turnout (scenarios a and b) instead")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                   help="where the JSON and charts go (default benchmarks/results)")
    p.add_argument("--scenarios", default=SCENARIOS, help="which of a,b,c,d,e (default all)")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure; medians are kept")
    p.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    p.add_argument("--quick", action="store_true", help="one short run per figure (a smoke test)")
    p.add_argument("--progress", action="store_true", default=None,
                   help="draw progress bars even when stderr is not a terminal")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scenarios = "".join(c for c in args.scenarios.lower() if c in SCENARIOS)
    options = Options(
        out=Path(args.out),
        repeats=1 if args.quick else max(1, args.repeats),
        duration_s=0.5 if args.quick else args.duration,
        concurrencies=[1, 32] if args.quick else [1, 8, 32, 128],
        isolation_s=2.0 if args.quick else 6.0,
        warmup_s=0.3 if args.quick else 0.5,
        isolation_rate=100.0,
        progress=args.progress,
        scenarios=scenarios,
    )
    started = time.monotonic()
    results = run(options, args.url)
    results["seconds"] = round(time.monotonic() - started, 1)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report.table(results))
    charts = report.charts(results, options.out)
    say(f"wrote {options.out / 'latest.json'}" + "".join(f", {c}" for c in charts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
