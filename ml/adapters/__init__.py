"""Framework adapters, looked up by the route table's ``framework`` name."""

from __future__ import annotations

import importlib

from turnout.ml.adapters.base import Adapter, LoadedModel, Prediction

# Names map to import paths so that a worker imports only the frameworks its
# routes use: a CPU worker serving sklearn models never imports torch.
ADAPTERS: dict[str, str] = {
    "sklearn": "turnout.ml.adapters.sklearn:SklearnAdapter",
    "torch": "turnout.ml.adapters.torch:TorchAdapter",
    "embedding": "turnout.ml.adapters.embedding:EmbeddingAdapter",
}


def get_adapter(framework: str) -> Adapter:
    """The adapter for a built-in framework name, or for an importable ``module:Class``."""
    target = ADAPTERS.get(framework, framework)
    module_name, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"unknown framework {framework!r}")
    cls = getattr(importlib.import_module(module_name), attr)
    adapter: Adapter = cls()
    return adapter


__all__ = ["ADAPTERS", "Adapter", "LoadedModel", "Prediction", "get_adapter"]
