"""Training one trial of a job, and registering the best as a new version.

A trial loads its dataset (bundled with scikit-learn, or the operator's CSV or
Parquet file), holds out a quarter of it (stratified, by the job's seed),
trains, scores the held-out part, and writes its artifact into a hidden
folder beside the model's versions (``.trial-<job>-<i>``), never listed.
``register`` renames the chosen trial's folder to the next version number,
once: a job delivered twice finds the version it already made.

Progress goes to ``report(stage, percent, **more)``; ``cancelled()`` is asked
between stages and after every epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from turnout.core.catalog import list_versions, next_version
from turnout.core.inputs import Tabular
from turnout.core.routes import Route
from turnout.core.training import BUNDLED, dataset_path
from turnout.ml.artifacts import META_FILE, ModelMeta, sha256_file

Report = Callable[..., None]
HELD_OUT = 0.25


class Cancelled(Exception):
    """The job was cancelled; nothing is registered."""


class TrialFailed(Exception):
    """The trial ran and could not produce a usable model (it diverged, …)."""


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


def code_version() -> str:
    """The Turnout release, and the commit when running from a checkout."""
    out = package_version("turnout")
    head = Path(__file__).resolve().parent.parent / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        out += f"+g{ref[:12]}"
    except OSError:
        pass
    return out


def train_trial(
    route: Route,
    trainer: str,
    params: dict[str, Any],
    seed: int,
    dataset_name: str,
    data_dir: Path,
    folder: Path,
    report: Report,
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Train one trial into ``folder``; its held-out metrics."""
    report("loading data", 2.0)
    data = load_dataset(dataset_name, data_dir)
    if not isinstance(route.input, Tabular):
        raise TrialFailed(f"model {route.name!r} does not take tabular rows; it cannot be "
                          "trained on a table")
    width = route.input.width
    if data.x.shape[1] != width:
        raise TrialFailed(
            f"dataset {dataset_name!r} has {data.x.shape[1]} feature columns; model "
            f"{route.name!r} takes {width}"
        )
    if cancelled():
        raise Cancelled()
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        data.x, data.y, test_size=HELD_OUT, random_state=seed, stratify=data.y
    )
    folder.mkdir(parents=True, exist_ok=True)
    fit = _fit_sklearn if trainer == "sklearn" else _fit_torch
    meta = fit(route, params, seed, (x_train, x_test, y_train, y_test), folder, report, cancelled)
    meta_doc = {
        **json.loads(meta.to_json()),
        "params": params,
        "seed": seed,
        "dataset": {"name": data.name, "sha256": data.sha256, "rows": len(data.y),
                    "held_out": HELD_OUT},
        "code_version": code_version(),
        "created_at": time.time(),
    }
    (folder / META_FILE).write_text(json.dumps(meta_doc, indent=2, sort_keys=True) + "\n")
    report("trained", 100.0, metrics=meta.metrics)
    return dict(meta.metrics)


Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _fit_sklearn(
    route: Route, params: dict[str, Any], seed: int, split: Split, folder: Path,
    report: Report, cancelled: Callable[[], bool],
) -> ModelMeta:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = split
    report("fitting", 20.0)
    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=params["C"], max_iter=params["max_iter"], l1_ratio=params["l1_ratio"],
        solver=params["solver"], random_state=seed))
    model.fit(x_train, y_train)
    if cancelled():
        raise Cancelled()
    report("evaluating", 80.0)
    accuracy = float(model.score(x_test, y_test))
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return ModelMeta(
        name=route.name, version="", framework="sklearn", artifact=path.name,
        sha256=sha256_file(path), input=route.input.describe(),
        classes=[c.item() if hasattr(c, "item") else c for c in model.classes_],
        metrics={"test_accuracy": accuracy},
        built_with={n: package_version(n) for n in ("scikit-learn", "numpy", "joblib")},
    )


def _fit_torch(
    route: Route, params: dict[str, Any], seed: int, split: Split, folder: Path,
    report: Report, cancelled: Callable[[], bool],
) -> ModelMeta:
    import torch

    from turnout.ml.nets import DigitsCNN

    x_train, x_test, y_train, y_test = split
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    xt = torch.from_numpy(x_train.astype(np.float32)).to(device)
    yt = torch.from_numpy(y_train.astype(np.int64)).to(device)
    net = DigitsCNN().to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=params["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    epochs, batch = int(params["epochs"]), int(params["batch_size"])
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(xt), generator=generator).to(device)
        total, seen = 0.0, 0
        for start in range(0, len(xt), batch):
            rows = order[start : start + batch]
            optimiser.zero_grad()
            loss = loss_fn(net(xt[rows]), yt[rows])
            loss.backward()
            optimiser.step()
            total += float(loss) * len(rows)
            seen += len(rows)
        mean = total / max(seen, 1)
        if not math.isfinite(mean):
            raise TrialFailed(f"training diverged at epoch {epoch} (loss {mean}); try a smaller lr")
        report("training", 5.0 + 90.0 * epoch / epochs, epoch=epoch, epochs=epochs,
               loss=round(mean, 5))
        if cancelled():
            raise Cancelled()
    net.eval()
    with torch.inference_mode():
        predicted = net(torch.from_numpy(x_test.astype(np.float32)).to(device)).argmax(1).cpu().numpy()
    accuracy = float((predicted == y_test).mean())
    path = folder / "model.pt"
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, path)
    return ModelMeta(
        name=route.name, version="", framework="torch", artifact=path.name,
        sha256=sha256_file(path), input={"kind": "tabular", "width": 64},
        classes=list(range(10)), architecture="digits_cnn",
        metrics={"test_accuracy": accuracy},
        built_with={n: package_version(n) for n in ("torch", "scikit-learn", "numpy")},
    )


def trial_folder(models_dir: Path, model: str, job_id: str, index: int) -> Path:
    return models_dir / model / f".trial-{job_id}-{index}"


def register(
    models_dir: Path, route: Route, job_id: str, chosen: Path, extra: dict[str, Any]
) -> str:
    """Make ``chosen`` (a finished trial's hidden folder) the model's next
    version: its metadata gets the number and ``extra``, then one rename puts
    it in place, complete or not at all. A job that already registered a
    version gets that one back (the folder is gone by then). The caller holds
    the model's registration lock."""
    for info in list_versions(models_dir, route):
        if info.meta.get("training_job") == job_id:
            return info.version
    version = next_version(models_dir, route)
    meta = json.loads((chosen / META_FILE).read_text())
    meta.update(extra, version=version, training_job=job_id)
    staged = chosen / f".{META_FILE}"
    staged.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    staged.replace(chosen / META_FILE)
    os.chmod(chosen, 0o755)
    chosen.rename(chosen.parent / version)
    return version


def discard(models_dir: Path, model: str, job_id: str) -> None:
    """Remove every trial folder of a job."""
    base = models_dir / model
    if base.is_dir():
        for path in base.glob(f".trial-{job_id}-*"):
            shutil.rmtree(path, ignore_errors=True)
