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

import json
import os
import shutil
import time
from collections.abc import Callable
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from turnout.core.catalog import list_versions, next_version
from turnout.core.inputs import Tabular
from turnout.core.routes import Route
from turnout.ml.artifacts import META_FILE
from turnout.ml.datasets import held_out, load_dataset
from turnout.ml.trainers import HELD_OUT, TRAINERS, Cancelled, Report, TrialFailed

__all__ = ["Cancelled", "TrialFailed", "discard", "register", "train_trial", "trial_folder"]



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
    folder.mkdir(parents=True, exist_ok=True)
    meta = TRAINERS[trainer](route.name, route.input.describe(), params, seed,
                             held_out(data, seed), folder, report, cancelled)
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
