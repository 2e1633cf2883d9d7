"""One trainer per framework, shared by ``turnout models build`` (the shipped
models, with the defaults) and training jobs (the operator's parameters): the
same code, the same defaults (``turnout.core.training.DEFAULTS``).

A trainer fits on a held-out split, reports progress to ``report(stage,
percent, **more)``, asks ``cancelled()`` between stages and after every epoch,
writes its artifact into ``folder`` and returns the version's metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from turnout.ml.artifacts import ModelMeta, sha256_file

Report = Callable[..., None]
Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Trainer = Callable[
    [str, dict[str, Any], dict[str, Any], int, Split, Path, Report, Callable[[], bool]], ModelMeta
]
# The share of a dataset held out for scoring.
HELD_OUT = 0.25


class Cancelled(Exception):
    """The job was cancelled; nothing is registered."""


class TrialFailed(Exception):
    """The trial ran and could not produce a usable model (it diverged, …)."""


def quiet(stage: str, percent: float, **more: Any) -> None:
    """A ``report`` that says nothing (``turnout models build``)."""


def never() -> bool:
    """A ``cancelled`` that never is."""
    return False


def fit_sklearn(
    name: str, input_: dict[str, Any], params: dict[str, Any], seed: int, split: Split,
    folder: Path, report: Report = quiet, cancelled: Callable[[], bool] = never,
) -> ModelMeta:
    """A scaled logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, _x_test, y_train, _y_test = split
    report("fitting", 20.0)
    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=params["C"], max_iter=params["max_iter"], l1_ratio=params["l1_ratio"],
        solver=params["solver"], random_state=seed))
    model.fit(x_train, y_train)
    if cancelled():
        raise Cancelled()
    report("evaluating", 80.0)
    return save_sklearn(name, input_, model, split, folder)


def save_sklearn(name: str, input_: dict[str, Any], model: Any, split: Split,
                 folder: Path) -> ModelMeta:
    """A fitted scikit-learn classifier, scored on the held-out rows and
    written into ``folder``: its metadata."""
    import joblib

    _, x_test, _, y_test = split
    accuracy = float(model.score(x_test, y_test))
    path = folder / "model.joblib"
    joblib.dump(model, path)
    return ModelMeta(
        name=name, version="", framework="sklearn", artifact=path.name,
        sha256=sha256_file(path), input=input_,
        classes=[c.item() if hasattr(c, "item") else c for c in model.classes_],
        metrics={"test_accuracy": accuracy},
        built_with={n: package_version(n) for n in ("scikit-learn", "numpy", "joblib")},
    )


def fit_digits_cnn(
    name: str, input_: dict[str, Any], params: dict[str, Any], seed: int, split: Split,
    folder: Path, report: Report = quiet, cancelled: Callable[[], bool] = never,
) -> ModelMeta:
    """The digits CNN (turnout.ml.nets), on the GPU when there is one."""
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
            total += loss.item() * len(rows)
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
        name=name, version="", framework="torch", artifact=path.name,
        sha256=sha256_file(path), input=input_,
        classes=list(range(10)), architecture="digits_cnn",
        metrics={"test_accuracy": accuracy},
        built_with={n: package_version(n) for n in ("torch", "scikit-learn", "numpy")},
    )




TRAINERS: dict[str, Trainer] = {"sklearn": fit_sklearn, "torch": fit_digits_cnn}
