"""Loading the formats ``turnout models add`` takes (``turnout.core.formats``
names and recognises them): one module per family, each with

- ``load(folder, meta, device) -> LoadedModel``: what a worker serves, from
  the version's ``meta.json`` (its format, its input schema, what the
  operator trusted at add);
- ``infer(folder, meta, loaded) -> (input, output)``: the schemas, read from
  the model itself where the format carries them (None where it does not).

``turnout.ml.inspect`` runs both in a throwaway process at add; the worker
runs ``load`` in its pool child. Runtimes are imported by the function that
needs them, so a CPU worker serving only scikit-learn never imports torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from turnout.ml.adapters.base import LoadedModel

_MODULES = {
    "skops": "sklearn", "joblib": "sklearn", "onnx": "onnx",
    "torchscript": "torch", "torch-export": "torch", "huggingface": "hf",
    "xgboost": "boosters", "lightgbm": "boosters",
}


class FormatError(Exception):
    """The model cannot be served as it is; the message says why and what to do."""


def module_for(fmt: str) -> ModuleType:
    if fmt not in _MODULES:
        raise FormatError(f"unknown format {fmt!r}")
    return importlib.import_module(f"turnout.ml.formats.{_MODULES[fmt]}")


def load(folder: Path, meta: dict[str, Any], device: str) -> LoadedModel:
    model: LoadedModel = module_for(str(meta["format"])).load(folder, meta, device)
    return model


def infer(
    folder: Path, meta: dict[str, Any], loaded: LoadedModel
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    result: tuple[dict[str, Any] | None, dict[str, Any]] = module_for(
        str(meta["format"])).infer(folder, meta, loaded)
    return result
