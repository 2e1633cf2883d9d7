"""Loading one version of a model, whichever way it was made."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from turnout.ml.adapters import LoadedModel, get_adapter
from turnout.ml.artifacts import ModelMeta


def load_version(
    framework: str, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]
) -> LoadedModel:
    """A version's model: an added one (its ``meta.json`` names a format)
    through ``turnout.ml.formats``, a built one through its framework's adapter."""
    if meta.format:
        from turnout.ml import formats

        folder = path.parents[len(Path(meta.artifact).parts) - 1]
        return formats.load(folder, asdict(meta), device)
    return get_adapter(framework).load(path, meta, device, options)
