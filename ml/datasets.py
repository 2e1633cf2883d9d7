"""Datasets for training and building: bundled with scikit-learn (iris,
digits, wine, breast_cancer), or the operator's CSV or Parquet file, the label
in a column named ``label`` or ``target`` (else the last)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from turnout.core.training import BUNDLED, dataset_path
from turnout.ml.artifacts import sha256_file
from turnout.ml.trainers import HELD_OUT, Split, TrialFailed


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray
    y: np.ndarray
    sha256: str
    features: list[str]


def load_dataset(name: str, data_dir: Path) -> Dataset:
    if name in BUNDLED:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float64)
        y = np.asarray(bunch.target_names[bunch.target] if name != "digits" else bunch.target)
        digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        digest.update(json.dumps(y.tolist()).encode())
        return Dataset(name, x, y, digest.hexdigest(), [str(f) for f in bunch.feature_names])
    path = dataset_path(data_dir, name)
    if path is None:
        raise FileNotFoundError(f"dataset {name!r} is no longer in {data_dir}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    columns = table.column_names
    label = "label" if "label" in columns else ("target" if "target" in columns else columns[-1])
    features = [c for c in columns if c != label]
    try:
        x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in features])
        x = x.astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise TrialFailed(f"dataset {name!r}: every column but {label!r} must be numbers ({exc})") from None
    y = np.asarray(table.column(label).to_pylist())
    return Dataset(name, x, y, sha256_file(path), features)


def held_out(data: Dataset, seed: int) -> Split:
    """``(x_train, x_test, y_train, y_test)``: a stratified split, by ``seed``."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=HELD_OUT, random_state=seed, stratify=data.y
    )
    return x_train, x_test, y_train, y_test
