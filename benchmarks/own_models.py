"""Scenario h, your own models: an ONNX graph added with ``turnout models add``
and served over HTTP, against onnxruntime called in this process on the same
rows; and what checking ``columns`` rows costs the router against plain
numeric rows of the same width (the router's own code, timed in process)."""

from __future__ import annotations

import itertools
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from turnout.benchmarks.scenarios import Bench
from turnout.benchmarks.stacks import BenchStack, wait_workers

WIDTH, HIDDEN, CLASSES = 64, 256, 10
ROUTES = "models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: cpu\n" \
         "    input: {kind: tabular, width: 4}\n"


def _mlp(path: Path) -> None:
    """A 64-256-256-10 MLP with softmax, random weights: a GPU-queue-sized
    model small enough for a CPU."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [WIDTH, HIDDEN, HIDDEN, CLASSES]
    nodes, inits, last = [], [], "x"
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        inits += [numpy_helper.from_array((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
                                          f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        last = f"a{i}"
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    nodes.append(helper.make_node("Softmax", [last], ["scores"], axis=1))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _in_process(path: Path, row: list[float], duration_s: float) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.asarray([row], dtype=np.float32)
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - t)
    return _row("onnxruntime in process", "mlp-onnx", 1, times, 1)


def _row(system: str, model: str, concurrency: int, times: list[float], per: int) -> dict[str, Any]:
    times = sorted(times)
    return {"system": system, "model": model, "concurrency": concurrency,
            "throughput_rps": round(per * len(times) / sum(times), 1),
            "p50_ms": round(statistics.median(times) * 1000, 4),
            "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1000, 4),
            "errors": 0, "client_cpu_per_request_us": 0.0, "requests": len(times)}


def validation_cost(duration_s: float) -> list[dict[str, Any]]:
    """256 rows of 8 fields, checked as ``columns`` and as ``tabular``."""
    from turnout.core.inputs import Columns, Tabular

    names = [f"c{i}" for i in range(8)]
    types = ["number", "integer", "string", "number", "boolean", "number", "string", "integer"]
    columns = Columns.model_validate({"columns": [{"name": n, "type": t}
                                                  for n, t in zip(names, types, strict=True)]})
    value = {"number": 1.5, "integer": 3, "string": "Paris", "boolean": True}
    named = [{n: value[t] for n, t in zip(names, types, strict=True)} for _ in range(256)]
    tabular = Tabular(width=8)
    plain = [[1.5] * 8 for _ in range(256)]
    out = []
    for label, kind, rows in (("tabular check", tabular, plain), ("columns check", columns, named)):
        times: list[float] = []
        end = time.perf_counter() + duration_s
        while time.perf_counter() < end:
            t = time.perf_counter()
            kind.rows("m", rows)
            times.append(time.perf_counter() - t)
        out.append(_row(label, "256 rows x 8", 1, times, 256))
    return out


def scenario_h(bench: Bench, stack: BenchStack) -> list[dict[str, Any]]:
    folder = stack.folder / "own"
    models = folder / "models"
    shutil.copytree(stack.settings.models_dir / "iris" / "1", models / "iris" / "1")
    routes = folder / "routes.yaml"
    routes.write_text(ROUTES)
    _mlp(folder / "mlp.onnx")
    env = {**stack.procs.env, "TURNOUT_MODELS_DIR": str(models), "TURNOUT_ROUTES_FILE": str(routes)}
    subprocess.run(stack.turnout_cmd("models", "add", "mlp-onnx", str(folder / "mlp.onnx"),
                                     "--queue", "cpu"), check=True, env=env)
    stack.procs.spawn("cpu@own", stack.turnout_cmd("worker", "cpu", "--name", "cpu@own"),
                      env={"TURNOUT_MODELS_DIR": str(models), "TURNOUT_ROUTES_FILE": str(routes)})
    from turnout.benchmarks.stacks import free_port, wait_http

    port = free_port()
    api = stack.procs.spawn("api-own", stack.turnout_cmd("api", "--port", str(port)),
                            env={"TURNOUT_MODELS_DIR": str(models),
                                 "TURNOUT_ROUTES_FILE": str(routes)})
    url = f"http://127.0.0.1:{port}"
    wait_http(url, api, path="/readyz")
    wait_workers(url, 1)
    row = np.random.default_rng(1).normal(size=WIDTH).round(4).tolist()
    body = {"inputs": [row], "wait": 30}
    # The shipped iris on the same stack: what any model costs to serve.
    rows = [bench.measure("turnout", url, "iris", 1)]
    rows += [bench.measure("turnout", url, "mlp-onnx", c, body=body) for c in (1, 32)]
    rows.append(_in_process(folder / "mlp.onnx", row, bench.o.duration_s))
    rows += validation_cost(bench.o.duration_s)
    return rows
