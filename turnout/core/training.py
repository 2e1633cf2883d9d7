"""Training jobs, the part every process shares: which lane a model trains on,
which parameters its trainer takes, which datasets exist, and how a job's
record and its trials' progress read as one view. Pure, apart from looking
at the datasets folder: the router validates with it, the training worker
runs what it validated.

A job is one task per trial (one trial without a search), then one task that
keeps the best and registers it as a new version; the trials join by writing
their results into the job's join hash (``turnout.core.redis_keys.training_join``),
and the one that completes it queues the select task (workers/training.py).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnout.core.errors import InvalidInput, UnknownDataset
from turnout.core.inputs import Tabular
from turnout.core.routes import Route

TASK_TRIAL = "turnout.train_trial"
TASK_SELECT = "turnout.train_select"
# The training lanes: queues no inference worker consumes.
LANE_CPU = "train.cpu"
LANE_GPU = "train.gpu"
LANES = (LANE_CPU, LANE_GPU)

# Datasets that ship with scikit-learn, by name (nothing is downloaded).
BUNDLED = ("iris", "digits", "wine", "breast_cancer")
DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DATASET_SUFFIXES = (".csv", ".parquet")
MAX_TRIALS = 32

def trial_id(job_id: str, index: int) -> str:
    """The task id of trial ``index`` of job ``job_id``."""
    return f"{job_id}.trial{index}"


def select_id(job_id: str) -> str:
    return f"{job_id}.select"


# Terminal states of a job.
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")

@dataclass(frozen=True)
class Param:
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] = ()
    help: str = ""

    def check(self, name: str, value: Any) -> Any:
        if self.choices:
            if value not in self.choices:
                raise InvalidInput(f"params.{name}: expected one of {list(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"params.{name}: expected a number, got {value!r}")
        if self.kind is int and (not float(value).is_integer()):
            raise InvalidInput(f"params.{name}: expected a whole number, got {value!r}")
        number = self.kind(value)
        if not math.isfinite(number):
            raise InvalidInput(f"params.{name}: expected a finite number, got {value!r}")
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high:
            low = "" if self.low is None else (f"> {self.low:g}" if self.low_open else f">= {self.low:g}")
            high = "" if self.high is None else f"<= {self.high:g}"
            raise InvalidInput(f"params.{name}: expected {' and '.join(p for p in (low, high) if p)}, "
                               f"got {value!r}")
        return number


# What each trainer takes; defaults are what `turnout models build` uses.
PARAMS: dict[str, dict[str, Param]] = {
    # scikit-learn: standardise, then logistic regression.
    "sklearn": {
        "C": Param(float, 0, 1e6, low_open=True, help="inverse regularisation strength"),
        "max_iter": Param(int, 1, 100_000),
        "l1_ratio": Param(float, 0, 1, help="elastic-net mix; above 0 needs solver saga"),
        "solver": Param(str, choices=("lbfgs", "saga", "newton-cg")),
    },
    # PyTorch: the digits CNN, trained with Adam.
    "torch": {
        "lr": Param(float, 0, 10, low_open=True),
        "epochs": Param(int, 1, 500),
        "batch_size": Param(int, 1, 4096),
    },
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "sklearn": {"C": 1.0, "max_iter": 1000, "l1_ratio": 0.0, "solver": "lbfgs"},
    # The shipped digits-cnn is built with these too (turnout.ml.trainers).
    "torch": {"lr": 2e-3, "epochs": 25, "batch_size": 64},
}


@dataclass(frozen=True)
class TrainRequest:
    model: str
    trainer: str  # "sklearn" or "torch"
    lane: str
    dataset: str
    seed: int
    params: dict[str, Any]
    search: dict[str, list[Any]] = field(default_factory=dict)

    def trials(self) -> list[dict[str, Any]]:
        """Every trial's parameters: the grid of the search over the fixed ones."""
        if not self.search:
            return [dict(self.params)]
        names = sorted(self.search)
        return [{**self.params, **dict(zip(names, combo, strict=True))}
                for combo in itertools.product(*(self.search[n] for n in names))]


def trainer_for(route: Route) -> str:
    if route.framework == "sklearn":
        return "sklearn"
    if route.framework == "torch" and isinstance(route.input, Tabular) and route.input.width == 64:
        return "torch"
    raise InvalidInput(
        f"model {route.name!r} ({route.framework}) cannot be trained here: Turnout trains "
        "scikit-learn models (logistic regression) and the digits CNN"
    )


def dataset_path(data_dir: Path, name: str) -> Path | None:
    """The operator's file for dataset ``name``, if there is one. Names only:
    a client never gives a path."""
    for suffix in DATASET_SUFFIXES:
        path = data_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def check_dataset(data_dir: Path, name: Any) -> str:
    if not isinstance(name, str) or not DATASET_RE.match(name):
        raise InvalidInput(
            f"dataset: expected a dataset name (letters, digits, '.', '_', '-'), got {name!r}"
        )
    if name in BUNDLED or dataset_path(data_dir, name) is not None:
        return name
    files = sorted(p.stem for s in DATASET_SUFFIXES for p in data_dir.glob(f"*{s}")) if data_dir.is_dir() else []
    raise UnknownDataset(
        f"no dataset {name!r}: bundled ones are {', '.join(BUNDLED)}; files in {data_dir}: "
        f"{', '.join(files) or 'none'} (CSV or Parquet)"
    )


def parse_request(route: Route, body: Mapping[str, Any], data_dir: Path) -> TrainRequest:
    """Validate a train request's body against the model's trainer."""
    trainer = trainer_for(route)
    allowed = PARAMS[trainer]
    unknown = set(body) - {"params", "seed", "dataset", "search"}
    if unknown:
        raise InvalidInput(f"unknown field(s) {sorted(unknown)}; expected params, seed, dataset, search")
    if "dataset" not in body:
        raise InvalidInput("dataset: required (a bundled dataset such as 'iris', or a file's name)")
    dataset = check_dataset(data_dir, body["dataset"])
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise InvalidInput(f"seed: expected a whole number from 0 to 2**32-1, got {seed!r}")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"params: expected an object, got {type(params).__name__}")
    checked = dict(DEFAULTS[trainer])
    for name, value in params.items():
        if name not in allowed:
            raise InvalidInput(f"params.{name}: unknown for {trainer} training; known: {sorted(allowed)}")
        checked[name] = allowed[name].check(name, value)
    search = body.get("search") or {}
    if not isinstance(search, dict):
        raise InvalidInput(f"search: expected an object of lists, got {type(search).__name__}")
    grid: dict[str, list[Any]] = {}
    for name, values in search.items():
        if name not in allowed:
            raise InvalidInput(f"search.{name}: unknown for {trainer} training; known: {sorted(allowed)}")
        if not isinstance(values, list) or not values:
            raise InvalidInput(f"search.{name}: expected a non-empty list of values")
        grid[name] = [allowed[name].check(name, v) for v in values]
    count = math.prod(len(v) for v in grid.values()) if grid else 1
    if count > MAX_TRIALS:
        raise InvalidInput(f"search: {count} trials; at most {MAX_TRIALS}")
    lane = LANE_CPU if trainer == "sklearn" else LANE_GPU
    return TrainRequest(route.name, trainer, lane, dataset, seed, checked, grid)


def job_view(record: Mapping[str, Any], progress: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A job as ``GET /v1/training/{id}`` shows it: its record, with progress
    summed over its trials (each trial's only ever goes up, so the sum does)."""
    status = record.get("status", "PENDING")
    trials = record.get("trials") or []
    states = [progress.get(str(i), {}) for i in range(len(trials))]
    if status == "SUCCESS":
        overall: dict[str, Any] = {"stage": "registered", "percent": 100.0}
    elif status in ("FAILURE", "REVOKED"):
        overall = {"stage": "failed" if status == "FAILURE" else "cancelled",
                   "percent": _mean(states)}
    elif not any(states):
        overall = {"stage": "queued", "percent": 0.0}
    else:
        done = all(s.get("percent", 0) >= 100 for s in states)
        overall = {"stage": "selecting" if done and len(states) > 1 else
                   (states[0].get("stage", "training") if len(states) == 1 else "training"),
                   "percent": min(99.0, _mean(states))}
        if status == "PENDING":
            status = "STARTED"
    if len(states) == 1 and states[0]:
        for key in ("epoch", "epochs", "loss"):
            if key in states[0]:
                overall[key] = states[0][key]
    view: dict[str, Any] = {
        "job_id": record["job_id"],
        "model": record["model"],
        "status": status,
        "dataset": record.get("dataset"),
        "seed": record.get("seed"),
        "params": record.get("params"),
        "progress": overall,
    }
    if record.get("search"):
        view["search"] = record["search"]
    shown = []
    for i, trial in enumerate(trials):
        entry = {"trial": i, "params": trial.get("params"), **{
            k: v for k, v in trial.items() if k in ("status", "score", "metrics", "error")}}
        state = states[i]
        if state and "status" not in entry:
            entry["progress"] = {k: state[k] for k in ("stage", "percent", "epoch", "epochs", "loss")
                                 if k in state}
        if state.get("metrics") and "metrics" not in entry:
            entry["metrics"] = state["metrics"]
        shown.append(entry)
    if len(shown) > 1:
        view["trials"] = shown
    elif shown and shown[0].get("metrics"):
        view["metrics"] = shown[0]["metrics"]
    for key in ("metrics", "version", "error", "created_at", "finished_at"):
        if record.get(key) is not None:
            view[key] = record[key]
    return view


def _mean(states: list[Mapping[str, Any]]) -> float:
    if not states:
        return 0.0
    return round(sum(float(s.get("percent", 0)) for s in states) / len(states), 1)
