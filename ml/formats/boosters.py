"""Gradient-boosted trees in their native files: XGBoost (``.json``/``.ubj``)
and LightGBM (``.txt``). Rows of numbers, as many as the model's features;
a classifier's objective gives probabilities and labels (class indices)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats.outputs import classified, plain


class Booster:
    def __init__(self, run: Any, classifier: bool, width: int, names: list[str] | None):
        self.run = run
        self.classifier = classifier
        self.width = width
        self.names = names

    def predict(self, rows: list[Any]) -> Prediction:
        raw = np.asarray(self.run(np.asarray(rows, dtype=np.float32)))
        if not self.classifier:
            return Prediction(plain(raw))
        if raw.ndim == 1:  # binary: the probability of class 1
            raw = np.stack([1.0 - raw, raw], axis=1)
        return classified(raw, None)


def load(folder: Path, meta: dict[str, Any], device: str) -> Booster:
    path = str(folder / meta["artifact"])
    if meta["format"] == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(path)
        if device.startswith("cuda") and xgb.build_info().get("USE_CUDA"):
            booster.set_param({"device": device})
        config = json.loads(booster.save_config())
        objective = config["learner"]["objective"]["name"]
        classifier = objective.startswith(("multi:softprob", "binary:logistic", "multi:softmax"))
        if objective == "multi:softmax":
            booster.set_param({"objective": "multi:softprob"})

        def run(x: Any) -> Any:
            return booster.inplace_predict(x)

        names = booster.feature_names
        return Booster(run, classifier, booster.num_features(), list(names) if names else None)
    import lightgbm as lgb

    model = lgb.Booster(model_file=path)
    objective = str(model.dump_model(num_iteration=1).get("objective", ""))
    classifier = objective.startswith(("multiclass", "binary"))
    return Booster(model.predict, classifier, model.num_feature(), model.feature_name())


def infer(folder: Path, meta: dict[str, Any], loaded: Booster) -> tuple[dict[str, Any], dict[str, Any]]:
    output = {"type": "label" if loaded.classifier else "number"}
    return {"kind": "tabular", "width": int(loaded.width)}, output
