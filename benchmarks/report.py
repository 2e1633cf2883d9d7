"""The benchmark's outputs: a table, the targets as ratios, PNG charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _find(rows: list[dict[str, Any]], system: str, concurrency: int | None = None,
          model: str | None = None) -> dict[str, Any] | None:
    for row in rows:
        if row["system"] == system and (concurrency is None or row.get("concurrency") == concurrency) \
                and (model is None or row.get("model") == model):
            return row
    return None


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    """a[key] / b[key], or None when either run is missing."""
    if a is None or b is None or not b.get(key):
        return None
    return round(float(a[key]) / float(b[key]), 3)


def targets(sc: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the throughput issue, as a ratio measured in this run."""
    b = sc.get("b", [])
    c = sc.get("c", [])
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, ok: bool | None) -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": ok})

    t1, h1, u1 = _find(b, "turnout", 1), _find(b, "handwritten", 1), _find(b, "tutorial", 1)
    r = _ratio(t1, h1, "p50_ms")
    add("iris c=1 p50 / hand-written queue p50", r, "<= 2.0", None if r is None else r <= 2.0)
    r = _ratio(t1, u1, "p50_ms")
    add("iris c=1 p50 / tutorial .get() p50", r, "<= 0.6", None if r is None else r <= 0.6)
    t32, u32, f32 = _find(b, "turnout", 32), _find(b, "tutorial", 32), _find(c, "floor", 32)
    r = _ratio(t32, u32, "throughput_rps")
    add("iris c=32 throughput / tutorial", r, ">= 4.0", None if r is None else r >= 4.0)
    p99 = t32["p99_ms"] if t32 else None
    add("iris c=32 p99 (ms)", p99, "<= 50", None if p99 is None else p99 <= 50)
    r = _ratio(t32, f32, "throughput_rps")
    add("iris c=32 throughput / no-queue floor (stretch)", r, ">= 1.0", None if r is None else r >= 1.0)
    d = sc.get("d", [])
    on, off = _find(d, "batching on"), _find(d, "batching off")
    r = _ratio(on, off, "throughput_rps")
    add("digits-cnn c=64 throughput, batching on / off", r, ">= 5.0", None if r is None else r >= 5.0)
    e = sc.get("e", [])
    idle, sep, shared = _find(e, "idle"), _find(e, "separate queues"), _find(e, "one shared queue")
    r = _ratio(sep, idle, "p99_ms")
    add("iris p99 under a saturated GPU queue / idle p99", r, "<= 2.0", None if r is None else r <= 2.0)
    r = _ratio(shared, idle, "p99_ms")
    add("the same, with every model on one shared queue", r, "(for comparison)", None)
    f = sc.get("f", [])
    r = _ratio(_find(f, "during training"), _find(f, "idle"), "p99_ms")
    add("iris p99 while digits-cnn trains / idle p99", r, "<= 2.0", None if r is None else r <= 2.0)
    g = sc.get("g", [])
    for c in (1, 32):
        on, off = _find(g, "events on", c), _find(g, "events off", c)
        r = _ratio(on, off, "p50_ms")
        add(f"iris c={c} p50, task events on / off", r, "(the cost of monitoring)", None)
        r = _ratio(on, off, "throughput_rps")
        add(f"iris c={c} throughput, task events on / off", r, "(the cost of monitoring)", None)
    i = sc.get("i", [])
    idle = _find(i, "idle")
    r = _ratio(_find(i, "batch queued, lanes"), idle, "p99_ms")
    add("iris p99 with a 200k-row batch queued / idle p99", r, "<= 3.0",
        None if r is None else r <= 3.0)
    r = _ratio(_find(i, "batch queued, one FIFO"), idle, "p99_ms")
    add("the same, the batch in the same lane (one FIFO)", r, "(for comparison)", None)
    j = sc.get("j", [])
    hand8 = _find(j, "handwritten", 8)
    for c in (8, 32):
        for mode in ("on", "off"):
            one_api = _find(j, f"worker batching {mode}, 1 API", c)
            four = _find(j, f"worker batching {mode}, 4 APIs", c)
            r = _ratio(four, one_api, "throughput_rps")
            goal = ">= 1.0" if mode == "on" else "(for comparison)"
            add(f"iris c={c} throughput, 4 API processes / 1, worker batching {mode}", r, goal,
                None if r is None or mode == "off" else r >= 1.0)
    for c in (8, 32):
        for apis in ("1 API", "4 APIs"):
            r = _ratio(_find(j, f"worker batching only, {apis}", c),
                       _find(j, f"worker batching on, {apis}", c), "throughput_rps")
            add(f"iris c={c} on {apis}: router batching off / on (workers batching)", r,
                "(is the router's batcher still worth it)", None)
    r = _ratio(_find(j, "worker batching on, 1 API", 8), hand8, "throughput_rps")
    add("iris c=8 throughput / hand-written queue (worker batching on)", r, ">= 1.0",
        None if r is None else r >= 1.0)
    r = _ratio(_find(j, "worker batching on, 4 APIs", 8), hand8, "throughput_rps")
    add("the same over 4 API processes", r, "(for comparison)", None)
    h = sc.get("h", [])
    served, bare = _find(h, "turnout", 1, "mlp-onnx"), _find(h, "onnxruntime in process", 1)
    r = _ratio(served, bare, "p50_ms")
    add("ONNX mlp c=1 p50 over HTTP / onnxruntime in process", r, "(the cost of serving)", None)
    r = _ratio(_find(h, "turnout", 32, "mlp-onnx"), bare, "throughput_rps")
    add("ONNX mlp c=32 throughput / in process, 1 row per call", r, "(for comparison)", None)
    r = _ratio(served, _find(h, "turnout", 1, "iris"), "p50_ms")
    add("ONNX mlp c=1 p50 / shipped iris c=1 p50, same stack", r, "(an added model's cost)",
        None)
    r = _ratio(_find(h, "tabular check"), _find(h, "columns check"), "throughput_rps")
    add("columns row check time / tabular, per row", r, "(the cost of names)", None)
    k = sc.get("k", [])
    for c in (1, 16):
        one, two = _find(k, "pipeline, one call", c), _find(k, "client calls both", c)
        r = _ratio(one, two, "p50_ms")
        add(f"ticket-topic c={c} p50, pipeline / the client calling both", r,
            "(one call against two round trips)", None)
        r = _ratio(one, two, "throughput_rps")
        add(f"ticket-topic c={c} throughput, pipeline / the client calling both", r,
            "(for comparison)", None)
    return out


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        (
            f"Turnout bench, {results['started']}: {m['cpus']} CPUs ({m['cpu']}), "
            f"{m['memory_gib']} GiB, {m['gpus']} GPU(s), Python {m['python']}; "
            f"medians of {results['options']['repeats']} runs of "
            f"{results['options']['duration_s']:g} s"
        ),
        "",
        (
            f"{'scenario':<9} {'system':<18} {'model':<11} {'c':>4} {'req/s':>9} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'errors':>6} {'client µs/req':>13}"
        ),
    ]
    names = {"a": "a c=1", "b": "b", "c": "c floor", "d": "d batch", "e": "e isol.",
             "f": "f train", "h": "h own", "i": "i lanes", "m": "m v2/v1",
             "n": "n image"}
    for key, rows in results["scenarios"].items():
        if key == "l":
            continue  # a table of its own, below
        for row in rows:
            c = row.get("concurrency", f"{row.get('rate_rps', 0):g}/s")
            lines.append(
                f"{names.get(key, key):<9} {row['system']:<18} {row['model']:<11} {c!s:>4} "
                f"{row['throughput_rps']:>9.1f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
                f"{row['errors']:>6} {row['client_cpu_per_request_us']:>13.1f}"
            )
    lines += broker_table(results["scenarios"].get("l", []))
    if results.get("targets"):
        lines += ["", f"{'target':<50} {'measured':>9}  {'goal':<16} met"]
        for t in results["targets"]:
            value = "n/a" if t["value"] is None else f"{t['value']:g}"
            met = {True: "yes", False: "NO", None: "-"}[t["met"]]
            lines.append(f"{t['target']:<50} {value:>9}  {t['goal']:<16} {met}")
    return "\n".join(lines)


def broker_table(rows: list[dict[str, Any]]) -> list[str]:
    """Scenario l: the broker's cost per request, per row, per idle second."""
    if not rows:
        return []
    lines = ["", f"{'l broker cost':<40} {'commands':>9} {'redis µs':>9} {'per core/s':>11}"]
    for row in rows:
        if row["unit"] == "second":
            lines.append(f"{'idle stack (' + str(row['workers']) + ' workers, 1 API), per s':<40} "
                         f"{row['commands_per_s']:>9.1f} {1e3 * row['redis_cpu_ms_per_s']:>9.0f} "
                         f"{'-':>11}")
        else:
            lines.append(f"{row['system'] + ', per ' + row['unit']:<40} "
                         f"{row['commands_per_unit']:>9.2f} {row['redis_cpu_us_per_unit']:>9.1f} "
                         f"{row['units_per_redis_core_s']:>11}")
    return lines


def charts(results: dict[str, Any], out: Path) -> list[Path]:
    """latency against concurrency; micro-batching; isolation. PNG, no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scenarios"]
    written: list[Path] = []
    rows = sc.get("b", []) + sc.get("c", [])
    if rows:
        fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
        for system in ("turnout", "floor", "handwritten", "tutorial"):
            pts = sorted((r for r in rows if r["system"] == system), key=lambda r: r["concurrency"])
            if not pts:
                continue
            xs = [p["concurrency"] for p in pts]
            line = lat.plot(xs, [p["p50_ms"] for p in pts], marker="o", label=f"{system} p50")[0]
            lat.plot(xs, [p["p99_ms"] for p in pts], marker="x", linestyle="--",
                     color=line.get_color(), label=f"{system} p99")
            thr.plot(xs, [p["throughput_rps"] for p in pts], marker="o", label=system)
        for ax in (lat, thr):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.grid(True, alpha=0.3)
        lat.set_yscale("log")
        lat.set_ylabel("latency (ms)")
        lat.set_title("iris: latency against concurrency")
        lat.legend(fontsize=7, ncol=2)
        thr.set_ylabel("requests / s")
        thr.set_title("iris: throughput")
        thr.legend(fontsize=8)
        fig.suptitle(_caption(results), fontsize=8)
        fig.tight_layout()
        path = out / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    bars = [(r["system"], r) for r in sc.get("d", [])]
    iso = [(r["system"], r) for r in sc.get("e", [])]
    if bars or iso:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        if bars:
            ax = axes[0]
            ax.bar([b[0] for b in bars], [b[1]["throughput_rps"] for b in bars], color=["#2a7", "#999"])
            ax.set_ylabel("requests / s")
            ax.set_title("digits-cnn at 64 concurrent clients: micro-batching")
        if iso:
            ax = axes[1]
            ax.bar([i[0] for i in iso], [i[1]["p99_ms"] for i in iso], color=["#999", "#2a7", "#c44"][: len(iso)])
            ax.set_yscale("log")
            ax.set_ylabel("iris p99 (ms)")
            ax.set_title("isolation: iris p99 while minilm floods its queue")
        fig.suptitle(_caption(results), fontsize=8)
        fig.tight_layout()
        path = out / "batching-isolation.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _caption(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (f"{m['cpus']} CPUs ({m['cpu']}), {m['gpus']} GPU(s); {results['started']}; "
            f"medians of {results['options']['repeats']} runs")
