"""The GPU proof: run on a machine with NVIDIA GPUs, with a stack up
(``turnout up``), as ``python -m turnout.benchmarks.gpu_check --url http://127.0.0.1:8000``.

It shows: pinning (a process with ``CUDA_VISIBLE_DEVICES=i`` sees exactly one
device, whose UUID is NVML's device i); the telemetry of ``/v1/devices``;
``digits-cnn`` and ``minilm`` served on ``cuda``; and minilm's throughput with
one string per request and with 64. Without a GPU it says so and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

from turnout.benchmarks.client import closed_loop
from turnout.workers.gpu.nvml import PyNvml, normalize_uuid

_PROBE = (
    "import json, torch; p = torch.cuda.get_device_properties(0); "
    "print(json.dumps({'count': torch.cuda.device_count(), 'uuid': str(p.uuid), 'name': p.name}))"
)


def pinning() -> list[dict[str, Any]]:
    nvml = PyNvml()
    nvml.start()
    rows = []
    for index in range(nvml.count()):
        handle = nvml.handle(index)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(index), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        seen = json.loads(subprocess.run([sys.executable, "-c", _PROBE], env=env, check=True,
                                         capture_output=True, text=True).stdout)
        nvml_uuid = nvml.uuid(handle)
        rows.append({
            "index": index,
            "nvml_uuid": nvml_uuid,
            "torch_uuid": seen["uuid"],
            "torch_device_count": seen["count"],
            "match": normalize_uuid(nvml_uuid) == normalize_uuid(seen["uuid"]) and seen["count"] == 1,
        })
    return rows


def _post(url: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m turnout.benchmarks.gpu_check")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    from turnout.workers.gpu.nvml import device_count

    count, why = device_count()
    if not count:
        print(f"no GPU here ({why}); nothing to prove")
        return 0
    out: dict[str, Any] = {"pinning": pinning()}
    with urllib.request.urlopen(args.url + "/v1/devices", timeout=10) as r:
        out["devices"] = json.loads(r.read())["devices"]
    for model, inputs in (("digits-cnn", [[0.0] * 64]), ("minilm", ["a sentence on a GPU"])):
        body = _post(args.url, f"/v1/models/{model}/predict", {"inputs": inputs, "wait": 30})
        out[model] = {k: body.get(k) for k in ("status", "queue", "worker", "device", "timings_ms")}
    throughput = {}
    for batch in (1, 64):
        body = {"inputs": ["Turnout sends each job down the right track."] * batch, "wait": 30}
        run = asyncio.run(closed_loop(args.url, "/v1/models/minilm/predict", body, 4,
                                      duration_s=args.seconds))
        throughput[f"batch_{batch}"] = {
            "requests_per_s": round(run.throughput, 1),
            "sentences_per_s": round(run.throughput * batch, 1),
            "p50_ms": round(run.percentile(50), 2),
        }
    out["minilm_throughput"] = throughput
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
