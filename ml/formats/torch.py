"""PyTorch programs that carry their own code: TorchScript (``torch.jit.load``;
the file has no input shapes, so ``add`` takes them from ``--sample``) and
``torch.export`` programs (``.pt2``; shapes and dtypes read from the program,
a symbolic dimension is free). State dicts keep their own route
(``framework: module:Class``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats import FormatError
from turnout.ml.formats.outputs import named

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32,
           "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


class Program:
    def __init__(self, call: Any, device: torch.device, schema: dict[str, Any] | None,
                 batch_free: bool = True) -> None:
        self.call = call
        self.device = device
        self.schema = schema or {}
        self.batch_free = batch_free

    def predict(self, rows: list[Any]) -> Prediction:
        if not self.batch_free and len(rows) > 1:
            parts = [self.predict([row]) for row in rows]
            return Prediction([p for part in parts for p in part.predictions])
        specs = self.schema.get("inputs") or [{"name": "input", "dtype": "float32"}]
        tensors = []
        for spec in specs:
            column = rows if len(specs) == 1 else [row[spec["name"]] for row in rows]
            tensors.append(torch.tensor(np.asarray(column), dtype=_DTYPES[spec["dtype"]],
                                        device=self.device))
        with torch.inference_mode():
            out = self.call(*tensors)
        if isinstance(out, dict):
            names, values = list(out), list(out.values())
        elif isinstance(out, tuple | list):
            names, values = [f"output_{i}" for i in range(len(out))], list(out)
        else:
            names, values = ["output"], [out]
        arrays = [v.detach().float().cpu().numpy() if v.dtype.is_floating_point
                  else v.detach().cpu().numpy() for v in values]
        return named(names, arrays, len(rows))


def load(folder: Path, meta: dict[str, Any], device: str) -> Program:
    dev = torch.device(device)
    path = folder / meta["artifact"]
    if meta["format"] == "torchscript":
        module = torch.jit.load(str(path), map_location=dev)
        module.eval()
        return Program(module, dev, meta.get("input"))
    program = torch.export.load(str(path))
    module = program.module()
    module.to(dev)
    read, batch_free = _export_schema(program)
    return Program(module, dev, meta.get("input") or read, batch_free=batch_free)


def _export_schema(program: Any) -> tuple[dict[str, Any], bool]:
    """The program's user inputs (name, dtype, per-row shape) and whether its
    batch dimension is free."""
    user = set(program.graph_signature.user_inputs)
    inputs, free = [], True
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user:
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise FormatError(f"input {node.name!r} is not a tensor; Turnout takes tensors")
        dims = [d if isinstance(d, int) else -1 for d in val.shape]
        if not dims:
            raise FormatError(f"input {node.name!r} has no batch dimension")
        if dims[0] != -1:
            free = False
            if dims[0] != 1:
                raise FormatError(
                    f"input {node.name!r} was exported with a fixed batch of {dims[0]}; export "
                    "with a free batch: torch.export.export(m, args, dynamic_shapes="
                    "{'x': {0: torch.export.Dim('batch')}}), or with a batch of 1")
        if val.dtype not in _NAMES:
            raise FormatError(f"input {node.name!r} has dtype {val.dtype}")
        inputs.append({"name": node.name, "dtype": _NAMES[val.dtype], "shape": dims[1:]})
    return {"kind": "tensor", "inputs": inputs}, free


def infer(folder: Path, meta: dict[str, Any], loaded: Program) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    if meta["format"] == "torchscript":
        return None, {}  # the sample gives both
    # load() read it from the program (the metadata has none yet at add).
    return loaded.schema, {}


def schema_from_sample(rows: list[Any]) -> dict[str, Any]:
    """A TorchScript module's inputs, from ``--sample``: each row's shape and
    whether its numbers are whole (int64) or not (float32)."""
    first = rows[0]
    named_rows = first if isinstance(first, dict) else {"input": first}
    inputs = []
    for name, value in named_rows.items():
        array = np.asarray(value)
        if array.dtype.kind not in "iufb":
            raise FormatError(f"--sample: input {name!r} is not a tensor of numbers")
        dtype = {"i": "int64", "u": "int64", "b": "bool"}.get(array.dtype.kind, "float32")
        inputs.append({"name": name, "dtype": dtype, "shape": list(array.shape)})
    return {"kind": "tensor", "inputs": inputs}
