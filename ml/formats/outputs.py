"""From a model's raw outputs to a ``Prediction``: one entry per row; an
object keyed by output name where there are several; labels in
``predictions`` and ``probabilities`` beside them for a classifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from turnout.ml.adapters.base import Prediction


def plain(value: Any) -> Any:
    """JSON-ready: numpy arrays and scalars as lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def classified(proba: np.ndarray, classes: Sequence[Any] | None) -> Prediction:
    """Labels as the argmax of the probabilities returned, so the two agree."""
    index = np.argmax(proba, axis=1)
    labels = [plain(classes[i]) for i in index] if classes is not None else index.tolist()
    return Prediction(labels, np.asarray(proba, dtype=np.float64).tolist())


def named(names: Sequence[str], outputs: Sequence[Any], rows: int) -> Prediction:
    """Several outputs (or one): per row, the value, or an object keyed by name.
    A pair named like a classifier's (``label``, ``probabilities``) answers as one."""
    arrays = [np.asarray(o) if not isinstance(o, list) else o for o in outputs]
    if len(names) == 1:
        return Prediction([plain(arrays[0][i]) for i in range(rows)])
    label = next((i for i, n in enumerate(names) if "label" in n.lower()), None)
    proba = next((i for i, n in enumerate(names) if "prob" in n.lower()), None)
    if len(names) == 2 and label is not None and proba is not None:
        probs = arrays[proba]
        if isinstance(probs, list) and probs and isinstance(probs[0], dict):
            # skl2onnx's ZipMap: one {class: p} per row, in class order.
            probs = [[float(p) for p in row.values()] for row in probs]
        return Prediction([plain(arrays[label][i]) for i in range(rows)],
                          np.asarray(probs, dtype=np.float64).tolist())
    return Prediction([{n: plain(a[i]) for n, a in zip(names, arrays, strict=True)}
                       for i in range(rows)])


def describe(prediction: Prediction) -> dict[str, Any]:
    """The output schema as the sample's answer shows it."""
    first = prediction.predictions[0] if prediction.predictions else None
    out: dict[str, Any] = {"shape": [] if first is None or isinstance(first, dict)
                           else list(np.shape(first))}
    if isinstance(first, dict):
        out["outputs"] = [{"name": k, "shape": list(np.shape(v))} for k, v in first.items()]
    elif isinstance(first, str | bool) or prediction.probabilities is not None:
        out["type"] = "label"
    elif isinstance(first, int | float):
        out["type"] = "number"
    else:
        out["type"] = "tensor"
    if prediction.probabilities is not None:
        out["probabilities"] = len(prediction.probabilities[0])
    return out
