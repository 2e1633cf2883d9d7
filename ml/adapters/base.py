"""What every framework adapter provides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from turnout.ml.artifacts import ModelMeta


@dataclass
class Prediction:
    """One entry per input row, in order; JSON-ready (no numpy types)."""

    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class TransientError(Exception):
    """A failure worth retrying under the route's retry policy (a busy device, …)."""


class LoadedModel(Protocol):
    def predict(self, rows: list[Any]) -> Prediction: ...


class Adapter(Protocol):
    def load(
        self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]
    ) -> LoadedModel: ...
