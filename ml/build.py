"""Builds the shipped models from data that ships with scikit-learn (no downloads).

``iris``: a scikit-learn logistic regression on the iris flowers (4 features).
``digits-cnn``: a PyTorch convolutional net on the 8x8 digits (64 features).

Each build is seeded, so the same library versions give the same model, and
writes into a temporary folder that is renamed into place only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.artifacts import META_FILE, ModelMeta, sha256_file

log = logging.getLogger(__name__)

SEED = 0
MIN_DIGITS_ACCURACY = 0.95


@dataclass(frozen=True)
class Built:
    name: str
    version: str
    folder: Path
    metrics: dict[str, float]
    seconds: float


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in names}


def build_iris(folder: Path, name: str, version: str) -> ModelMeta:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_iris()
    labels = data.target_names[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, labels, test_size=0.25, random_state=SEED, stratify=labels
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x_train, y_train)
    accuracy = float(model.score(x_test, y_test))
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return ModelMeta(
        name=name,
        version=version,
        framework="sklearn",
        artifact=path.name,
        sha256=sha256_file(path),
        input={"kind": "tabular", "width": 4, "features": list(data.feature_names)},
        classes=[str(c) for c in model.classes_],
        metrics={"test_accuracy": accuracy},
        built_with=_versions("scikit-learn", "numpy", "joblib"),
    )


def build_digits_cnn(folder: Path, name: str, version: str) -> ModelMeta:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from ml.nets import DigitsCNN

    torch.manual_seed(SEED)
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32),
        data.target,
        test_size=0.2,
        random_state=SEED,
        stratify=data.target,
    )
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    net = DigitsCNN()
    optimiser = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    net.train()
    for _epoch in range(25):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss_fn(net(xt[batch]), yt[batch]).backward()
            optimiser.step()
    net.eval()
    with torch.inference_mode():
        predicted = net(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    accuracy = float((predicted == y_test).mean())
    if accuracy < MIN_DIGITS_ACCURACY:
        raise RuntimeError(
            f"digits-cnn reached {accuracy:.3f} test accuracy, below {MIN_DIGITS_ACCURACY}"
        )
    path = folder / "model.pt"
    torch.save(net.state_dict(), path)
    return ModelMeta(
        name=name,
        version=version,
        framework="torch",
        artifact=path.name,
        sha256=sha256_file(path),
        input={"kind": "tabular", "width": 64},
        classes=list(range(10)),
        architecture="digits_cnn",
        metrics={"test_accuracy": accuracy},
        built_with=_versions("torch", "scikit-learn", "numpy"),
    )


BUILDERS: dict[str, Callable[[Path, str, str], ModelMeta]] = {
    "iris": build_iris,
    "digits-cnn": build_digits_cnn,
}


def build(models_dir: Path, name: str, version: str = "1", folder: str | None = None) -> Built:
    """Build model ``name`` into ``models_dir/<folder or name/version>``, replacing
    what was there only once the new build is complete."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ValueError(f"no builder for model {name!r}; known: {sorted(BUILDERS)}") from None
    target = models_dir / (folder or f"{name}/{version}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        meta = builder(tmp, name, version)
        (tmp / META_FILE).write_text(meta.to_json())
        os.chmod(tmp, 0o755)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Built(name, version, target, meta.metrics, time.perf_counter() - started)
