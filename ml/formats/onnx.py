"""ONNX graphs through onnxruntime: the CPU provider on a CPU worker; on a
GPU worker the CUDA provider on the worker's device, and a session that fell
back to the CPU is a failure, named (onnxruntime#23372 is that silent fallback).

Inputs and outputs, their dtypes and shapes are read from the graph; the
first dimension is the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats import FormatError
from turnout.ml.formats.outputs import named

_DTYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
           "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
           "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(uint16)": "uint16",
           "tensor(uint32)": "uint32", "tensor(uint64)": "uint64", "tensor(bool)": "bool"}


class OnnxModel:
    def __init__(self, session: Any, batch_free: bool) -> None:
        self.session = session
        self.inputs = [(i.name, _DTYPES.get(i.type, "float32")) for i in session.get_inputs()]
        self.outputs = [o.name for o in session.get_outputs()]
        self.batch_free = batch_free

    def predict(self, rows: list[Any]) -> Prediction:
        if not self.batch_free and len(rows) > 1:
            parts = [self.predict([row]) for row in rows]
            probs = [p for part in parts for p in (part.probabilities or [])]
            return Prediction([p for part in parts for p in part.predictions], probs or None)
        feeds = {}
        for name, dtype in self.inputs:
            column = rows if len(self.inputs) == 1 else [row[name] for row in rows]
            feeds[name] = np.asarray(column, dtype=dtype)
        outputs = self.session.run(self.outputs, feeds)
        return named(self.outputs, outputs, len(rows))


def _providers(device: str) -> list[Any]:
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load(folder: Path, meta: dict[str, Any], device: str) -> OnnxModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not device.startswith("cuda"):
        # A CPU worker's parallelism is its pool of children, one per core:
        # onnxruntime's own pool (a thread per core, spinning between runs)
        # in each child would fight them, and the router, for every core.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(folder / meta["artifact"]), options,
                                   providers=_providers(device))
    if device.startswith("cuda") and session.get_providers()[0] != "CUDAExecutionProvider":
        raise FormatError(
            f"onnxruntime fell back to the CPU on {device} (providers "
            f"{session.get_providers()}); install onnxruntime-gpu (turnout[onnx-gpu]) "
            "with a CUDA that matches the driver")
    first = session.get_inputs()[0].shape
    return OnnxModel(session, batch_free=not (first and isinstance(first[0], int)))


def infer(folder: Path, meta: dict[str, Any], loaded: OnnxModel) -> tuple[dict[str, Any], dict[str, Any]]:
    inputs = []
    for i in loaded.session.get_inputs():
        if i.type not in _DTYPES:
            raise FormatError(f"input {i.name!r} is {i.type}; Turnout takes tensor inputs")
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in (i.shape or [])[1:]]
        inputs.append({"name": i.name, "dtype": _DTYPES[i.type], "shape": shape})
    outputs = [{"name": o.name, "type": o.type,
                "shape": [d if isinstance(d, int) else -1 for d in (o.shape or [])[1:]]}
               for o in loaded.session.get_outputs()]
    return {"kind": "tensor", "inputs": inputs}, {"outputs": outputs}
