"""Scenario n, images: a small convolutional net (TorchScript, random weights)
taking 3x64x64, added with ``turnout models add`` and served twice from the
same file: as an image model (a JPEG body, decoded in the worker) and as the
tensor it is (the same pixels as JSON numbers, as a client without image
inputs would send them). Both at 16 clients, side by side: requests a second
and the bytes each request puts on the wire."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from turnout.benchmarks.client import RawBody
from turnout.benchmarks.scenarios import Bench
from turnout.benchmarks.stacks import BenchStack, free_port, wait_http, wait_workers

SIZE = 64
CLIENTS = 16
ROUTES = "models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: cpu\n" \
         "    input: {kind: tabular, width: 4}\n"


def _net(path: Path, sample: Path) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10),
        torch.nn.Softmax(dim=1)).eval()
    torch.jit.script(net).save(str(path))
    sample.write_text(json.dumps({"inputs": [np.zeros((3, SIZE, SIZE)).tolist()]}))


def _picture() -> tuple[bytes, list[Any]]:
    """A 64x64 photo-like JPEG (smooth gradients and noise), and the pixels it
    decodes to, normalized as the image route does, as nested lists."""
    from PIL import Image

    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([x * 4, y * 4, (x + y) * 2], axis=2) + rng.normal(0, 12, (SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    pixels = np.asarray(Image.open(io.BytesIO(out.getvalue())).convert("RGB"), np.float32) / 255
    return out.getvalue(), pixels.transpose(2, 0, 1).round(4).tolist()


def scenario_n(bench: Bench, stack: BenchStack) -> list[dict[str, Any]]:
    folder = stack.folder / "images"
    models = folder / "models"
    shutil.copytree(stack.settings.models_dir / "iris" / "1", models / "iris" / "1")
    routes = folder / "routes.yaml"
    _net(folder / "pic.pt", folder / "sample.json")
    env = {**stack.procs.env, "TURNOUT_MODELS_DIR": str(models), "TURNOUT_ROUTES_FILE": str(routes)}
    routes.write_text(ROUTES)
    subprocess.run(stack.turnout_cmd("models", "add", "pic", str(folder / "pic.pt"), "--queue",
                                     "cpu", "--sample", str(folder / "sample.json")),
                   check=True, env=env)
    # The same file as an image model: the added route, its input an image.
    added = yaml.safe_load((models / "pic" / "route.yaml").read_text())
    image_route = {**added, "artifact": "pic/1",
                   "input": {"kind": "image", "size": [SIZE, SIZE], "channels": 3,
                             "layout": "chw", "resize": "stretch"}}
    table = yaml.safe_load(ROUTES)
    table["models"]["pic-image"] = image_route
    routes.write_text(yaml.safe_dump(table))
    # In force everywhere, as an operator's edit is.
    subprocess.run(stack.turnout_cmd("reload"), check=True, env=env, capture_output=True)
    paths = {"TURNOUT_MODELS_DIR": str(models), "TURNOUT_ROUTES_FILE": str(routes)}
    stack.procs.spawn("cpu@images", stack.turnout_cmd("worker", "cpu", "--name", "cpu@images"),
                      env=paths)
    port = free_port()
    api = stack.procs.spawn("api-images", stack.turnout_cmd("api", "--port", str(port)), env=paths)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, api, path="/readyz")
    wait_workers(url, 1)
    jpeg, pixels = _picture()
    as_json = {"inputs": [pixels], "wait": 30}
    rows = []
    for label, model, body, path, size in (
        ("JPEG body", "pic-image", RawBody("image/jpeg", jpeg),
         "/v1/models/pic-image/predict?wait=30", len(jpeg)),
        ("JSON numbers", "pic", as_json, None, len(json.dumps(as_json, separators=(",", ":")))),
    ):
        row = bench.measure(label, url, model, CLIENTS, body=body, path=path)
        rows.append(row | {"request_bytes": size})
    return rows
