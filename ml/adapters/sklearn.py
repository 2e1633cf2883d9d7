"""scikit-learn models saved with joblib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np

from turnout.ml.adapters.base import Prediction
from turnout.ml.artifacts import ModelMeta


class SklearnModel:
    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.has_proba = hasattr(estimator, "predict_proba")

    def predict(self, rows: list[Any]) -> Prediction:
        x = np.asarray(rows, dtype=np.float64)
        if self.has_proba:
            proba = self.estimator.predict_proba(x)
            # Taking the argmax of the probabilities we return keeps the label
            # and the probabilities consistent, and saves a second pass.
            labels = self.estimator.classes_[np.argmax(proba, axis=1)]
            return Prediction(labels.tolist(), proba.tolist())
        return Prediction(self.estimator.predict(x).tolist())


class SklearnAdapter:
    def load(
        self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]
    ) -> SklearnModel:
        import sklearn

        # The router has already checked every number (finite, right width):
        # skipping scikit-learn's own checks saves a sixth of a small model's
        # call. Process-wide, which is fine in a worker's pool child.
        sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
        # joblib unpickles: the caller has already checked the file's sha256
        # against the metadata (ml.artifacts.verify).
        return SklearnModel(joblib.load(path))
