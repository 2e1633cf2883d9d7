"""``turnout bench``: what Turnout costs against running the model in-process,
and what its queues buy.

It starts its own stack (a Redis, Turnout's workers and API, and the
baselines of ``turnout.benchmarks.baselines``), or measures a running one with
``--url`` (scenarios a and b only). Scenarios:

  a  latency at concurrency 1, per model
  b  iris throughput and p50/p99 at concurrency 1, 8, 32, 128, against the
     tutorial Celery design and a hand-written Redis queue
  c  the floor: iris called in-process behind the same HTTP server
  d  micro-batching on against off: digits-cnn at concurrency 64
  e  isolation: iris at a steady rate while the GPU queue is saturated with
     minilm work, with Turnout's separate queues against the same workers all
     on one shared queue
  f  training isolation: iris at a steady rate, idle and while a training job runs
  g  monitoring's cost: iris at concurrency 1 and 32 with task events off, then on
  i  priority lanes: iris at a steady rate, idle and while a 200,000-row iris
     batch job waits on the same queue in its low lane, and in the normal lane
     (one FIFO queue, as before lanes)
  h  your own models: an ONNX graph added with `turnout models add`, over HTTP
     against onnxruntime in process; `columns` row checks against `tabular`
  j  worker-side batching across four API processes, on and off
  k  a pipeline in one call against the client calling both of its models
  l  the broker's cost: Redis commands and Redis CPU per request (iris at 1
     and 32 clients), per batch-job row, and per second of the idle stack,
     from INFO commandstats; the requests a second one Redis core carries

Every figure is the median of ``--repeats`` runs; ratios compare runs made
side by side in the same invocation, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from turnout.benchmarks import report
from turnout.benchmarks.scenarios import (
    SCENARIOS,
    Bench,
    Options,
    events_cost,
    isolation_run,
    scenario_a,
    scenario_b,
    scenario_c,
    scenario_d,
    training_isolation,
)
from turnout.benchmarks.stacks import BenchStack, no_batching, one_queue, routes_variant
from turnout.core.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    from turnout.workers.gpu.nvml import device_count

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
    stack = BenchStack(folder)
    try:
        say(f"starting Redis, Turnout and the baselines (logs in {folder})")
        stack.build_models()
        routes = stack.settings.routes_file
        turnout_url, _ = stack.turnout(routes, training="f" in wanted)
        baselines = stack.baselines() if wanted & {"b", "c"} else {}
        if "a" in wanted:
            sc["a"] = scenario_a(bench, turnout_url)
        if "b" in wanted:
            sc["b"] = scenario_b(bench, turnout_url, baselines)
        if "c" in wanted:
            sc["c"] = scenario_c(bench, baselines["floor"])
        if "m" in wanted:
            from turnout.benchmarks.scenarios import scenario_m

            # On the first stack, as it stands: v1 and v2 side by side.
            sc["m"] = scenario_m(bench, turnout_url)
        stack.procs.stop([p.name for p in stack.procs.procs
                          if p.name.startswith(("floor", "tutorial", "handwritten"))])
        if "f" in wanted:
            sc["f"] = training_isolation(bench, turnout_url)
        if "g" in wanted:
            sc["g"] = events_cost(bench, turnout_url, stack.broker.url, routes)
        if "d" in wanted:
            off = stack.api("api-nobatch", routes_variant(routes, folder / "routes-nobatch.yaml", no_batching))
            sc["d"] = scenario_d(bench, turnout_url, off)
        if "e" in wanted:
            sc["e"] = [isolation_run(bench, turnout_url, "idle", saturate=False),
                       isolation_run(bench, turnout_url, "separate queues", saturate=True)]
            stack.procs.stop()
            shared_routes = routes_variant(routes, folder / "routes-shared.yaml", one_queue)
            shared_url, _ = stack.turnout(shared_routes, shared=True)
            sc["e"].append(isolation_run(bench, shared_url, "one shared queue", saturate=True))
        if "i" in wanted:
            from turnout.benchmarks.scenarios import lanes_run

            stack.procs.stop()
            turnout_url, _ = stack.turnout(routes)
            sc["i"] = [lanes_run(bench, turnout_url, "idle", None),
                       lanes_run(bench, turnout_url, "batch queued, lanes", "low"),
                       lanes_run(bench, turnout_url, "batch queued, one FIFO", "normal")]
        if "j" in wanted:
            from turnout.benchmarks.scenarios import spread_run

            stack.procs.stop()
            sc["j"] = []
            for label, env in (
                ("worker batching on", {"TURNOUT_WORKER_BATCHING": "1"}),
                ("worker batching off", {"TURNOUT_WORKER_BATCHING": "0"}),
                # Does the router's micro-batcher still earn its place?
                ("worker batching only", {"TURNOUT_WORKER_BATCHING": "1",
                                          "TURNOUT_ROUTER_BATCHING": "0"}),
            ):
                first, _ = stack.turnout(routes, extra_env=env)
                urls = [first] + [stack.api(f"api-{label.replace(' ', '-')}-{k}", routes, env)
                                  for k in range(3)]
                sc["j"] += spread_run(bench, urls, label)
                stack.procs.stop()
            hand = stack.baselines(("handwritten",))["handwritten"]
            sc["j"].append(bench.measure("handwritten", hand, "iris", 8))
            stack.procs.stop()
        if "k" in wanted:
            from turnout.benchmarks.scenarios import pipeline_run

            stack.procs.stop()
            turnout_url, _ = stack.turnout(routes)
            sc["k"] = pipeline_run(bench, turnout_url)
            stack.procs.stop()
        if "l" in wanted:
            from turnout.benchmarks.broker_cost import broker_cost

            stack.procs.stop()
            turnout_url, _ = stack.turnout(routes)
            sc["l"] = broker_cost(bench, turnout_url, stack.broker.url)
            stack.procs.stop()
        if "n" in wanted:
            from turnout.benchmarks.images import scenario_n

            stack.procs.stop()
            sc["n"] = scenario_n(bench, stack)
            stack.procs.stop()
        if "h" in wanted:
            from importlib.util import find_spec

            from turnout.benchmarks.own_models import scenario_h

            if find_spec("onnx") is None or find_spec("onnxruntime") is None:
                say("scenario h needs onnx (to build its graph) and onnxruntime: "
                    "pip install 'turnout[onnx]' onnx; skipped")
            else:
                # Last, on its own models folder and route table: it publishes its table.
                stack.procs.stop()
                sc["h"] = scenario_h(bench, stack)
    finally:
        stack.close()
    results["targets"] = report.targets(sc)
    return results


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def out_folder(given: str | None) -> Path:
    """``--out``, else ``$TURNOUT_HOME/bench``: a run changes no tracked file
    unless told to (``--out benchmarks/results`` refreshes the committed figures)."""
    return Path(given) if given else load_settings().home / "bench"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="measure a running Turnout (scenarios a and b) instead")
    p.add_argument("--out", default=None,
                   help="where the JSON and charts go (default $TURNOUT_HOME/bench; the "
                   "committed figures are refreshed with --out benchmarks/results)")
    p.add_argument("--scenarios", default=SCENARIOS, help="which of a-n (default all)")
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
        out=out_folder(args.out),
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
