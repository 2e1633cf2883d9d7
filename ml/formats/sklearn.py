"""scikit-learn: ``.skops`` through ``skops.io`` (no code runs at load; a type
beyond skops' defaults only when the operator trusted it), and joblib/pickle
files only where the operator trusted pickles at add.

The input schema is read from the fitted estimator: ``feature_names_in_`` (a
DataFrame's columns) typed by the encoders that take them (a OneHotEncoder's
string categories make a string column), or ``n_features_in_`` numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from turnout.ml.adapters.base import Prediction
from turnout.ml.formats import FormatError
from turnout.ml.formats.outputs import classified, plain
from turnout.ml.frames import as_matrix


class Estimator:
    def __init__(self, estimator: Any, schema: dict[str, Any] | None) -> None:
        self.estimator = estimator
        self.schema = schema or {}
        self.has_proba = hasattr(estimator, "predict_proba")
        self.warnings: list[str] = []

    def predict(self, rows: list[Any]) -> Prediction:
        x = as_matrix(rows, self.schema)
        if self.has_proba:
            return classified(self.estimator.predict_proba(x), list(self.estimator.classes_))
        return Prediction(plain(self.estimator.predict(x)))


def load(folder: Path, meta: dict[str, Any], device: str) -> Estimator:
    path = folder / meta["artifact"]
    trusted = meta.get("trusted") or {}
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if meta["format"] == "skops":
            estimator = _load_skops(path, list(trusted.get("types") or []))
        else:
            if not trusted.get("pickle"):
                raise FormatError(f"{path.name} is a pickle and was not trusted at add")
            import joblib

            estimator = joblib.load(path)
    for w in seen:
        if w.category.__name__ == "InconsistentVersionWarning":
            caught.append(str(w.message).split(". ")[0])
    model = Estimator(estimator, meta.get("input"))
    model.warnings = caught
    return model


def _load_skops(path: Path, trust: list[str]) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    left = [t for t in untrusted if t not in trust]
    if left:
        raise FormatError(
            f"{path.name} holds types that skops does not trust by default: {', '.join(left)}. "
            "Trust them only if you trust who made the file: --trust-type TYPE for each "
            "(or TURNOUT_TRUSTED_TYPES)")
    return sio.load(path, trusted=[t for t in untrusted if t in trust] or None)


def infer(folder: Path, meta: dict[str, Any], loaded: Estimator) -> tuple[dict[str, Any], dict[str, Any]]:
    est = loaded.estimator
    names = getattr(est, "feature_names_in_", None)
    if names is None:
        width = getattr(est, "n_features_in_", None)
        if width is None:
            raise FormatError("the estimator says neither its columns (feature_names_in_) nor "
                              "its width (n_features_in_); is it fitted?")
        schema: dict[str, Any] = {"kind": "tabular", "width": int(width)}
    else:
        types = _column_types(est)
        schema = {"kind": "columns", "columns": [
            {"name": str(n), **types.get(str(n), {"type": "number"})} for n in names]}
    loaded.schema = schema
    output: dict[str, Any] = {"type": "label", "classes": plain(list(est.classes_))} \
        if loaded.has_proba else {"type": "number"}
    return schema, output


def _column_types(est: Any) -> dict[str, dict[str, Any]]:
    """Column name -> {"type", "nullable"?, "example"} from the encoders and
    imputers that take it in any ColumnTransformer inside ``est``."""
    from sklearn.compose import ColumnTransformer

    found: dict[str, dict[str, Any]] = {}
    for ct in _walk(est):
        if not isinstance(ct, ColumnTransformer):
            continue
        all_names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
        for _, trans, cols in getattr(ct, "transformers_", []):
            cols = _names(cols, all_names)
            parts = list(_walk(trans))
            nullable = any(type(p).__name__ in ("SimpleImputer", "KNNImputer",
                                                 "IterativeImputer") for p in parts)
            encoder = next((p for p in parts if hasattr(p, "categories_")), None)
            for k, col in enumerate(cols):
                entry: dict[str, Any] = {"type": "number"}
                if encoder is not None and k < len(encoder.categories_):
                    cats = np.asarray(encoder.categories_[k])
                    if cats.dtype.kind in "OUS":
                        entry = {"type": "string", "example": str(cats[0])}
                    elif cats.dtype.kind == "b":
                        entry = {"type": "boolean"}
                    elif cats.dtype.kind in "iu":
                        entry = {"type": "integer", "example": int(cats[0])}
                if nullable:
                    entry["nullable"] = True
                found[col] = entry
    return found


def _names(cols: Any, all_names: list[str]) -> list[str]:
    if isinstance(cols, str):
        return [cols]
    if isinstance(cols, slice):
        return all_names[cols]
    out = []
    for c in np.atleast_1d(cols).tolist():
        if isinstance(c, bool):
            continue
        out.append(all_names[c] if isinstance(c, int) and c < len(all_names) else str(c))
    if np.asarray(cols).dtype == bool:
        out = [n for n, keep in zip(all_names, np.asarray(cols), strict=False) if keep]
    return out


def _walk(est: Any) -> Any:
    """``est`` and every estimator inside it (Pipeline steps, a
    ColumnTransformer's parts, a search's best estimator)."""
    yield est
    for _, step in getattr(est, "steps", None) or []:
        yield from _walk(step)
    for _, trans, _cols in getattr(est, "transformers_", None) or []:
        if not isinstance(trans, str):
            yield from _walk(trans)
    inner = getattr(est, "best_estimator_", None) or getattr(est, "estimator_", None)
    if inner is not None and inner is not est:
        yield from _walk(inner)

