"""The route table's typed shape: one ``Route`` per model, per-queue limits,
and the ``RouteTable`` that holds them. Reading a file is ``loading.py``'s."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from turnout.core.errors import UnknownModel
from turnout.core.inputs import InputSchema
from turnout.core.strict import StrictModel

QUEUE_RE = re.compile(r"^(cpu|gpu|gpu\.(0|[1-9][0-9]*))$")
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Built-in frameworks; anything else must be an importable ``module:Class``.
FRAMEWORKS = ("sklearn", "torch", "embedding", "onnx", "huggingface", "xgboost", "lightgbm")


def check_queue(value: str) -> str:
    if not QUEUE_RE.match(value):
        raise ValueError(f"expected 'cpu', 'gpu' or 'gpu.<index>', got {value!r}")
    return value


class RetryPolicy(StrictModel):
    max: int = Field(default=2, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=600)


class QueueConfig(StrictModel):
    # New work is refused (429) once this many jobs wait in the queue.
    max_depth: int = Field(default=10_000, ge=1)


class Defaults(StrictModel):
    time_limit_s: float = Field(default=30.0, gt=0, le=24 * 3600)
    max_rows: int = Field(default=256, ge=1)
    max_depth: int = Field(default=10_000, ge=1)
    retries: RetryPolicy = RetryPolicy()


class OutputSchema(StrictModel):
    """What a model answers per row, so that a pipeline's steps can be checked
    against each other at load: a class ``label``, a ``number``, a ``vector``
    of ``width`` numbers (an embedding), or ``text``."""

    kind: Literal["label", "number", "vector", "text"]
    width: int | None = Field(default=None, ge=1, le=1_000_000)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.width is not None:
            out["width"] = self.width
        return out

    def summary(self) -> str:
        return f"vector[{self.width}]" if self.kind == "vector" and self.width else self.kind


class Route(StrictModel):
    name: str
    framework: str
    version: str
    # The model's folder inside the models folder; by default <name>/<version>.
    artifact: str | None = None
    queue: str
    # Place the model on these GPU indices only: its jobs go to ``gpu.<i>``.
    devices: tuple[int, ...] | None = None
    fallback: str | None = None
    input: InputSchema
    time_limit_s: float = Field(gt=0, le=24 * 3600)
    # A request that cannot start within this long of its arrival is dropped
    # unrun (504 DeadlineExceeded); a request's own timeout_s wins.
    queue_timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    max_rows: int = Field(ge=1)
    retries: RetryPolicy
    max_batch: int | None = Field(default=None, ge=1, le=65_536)
    max_delay_ms: float | None = Field(default=None, ge=0, le=10_000)
    # Free-form settings handed to the framework adapter.
    options: dict[str, Any] = Field(default_factory=dict)
    # What it answers per row (checked against a pipeline's next step); by
    # default a label for a classifier's frameworks, unknown otherwise.
    output: OutputSchema | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) else value

    @field_validator("framework")
    @classmethod
    def _known_framework(cls, value: str) -> str:
        if value not in FRAMEWORKS and not re.match(r"^[\w.]+:\w+$", value):
            raise ValueError(
                f"expected one of {', '.join(FRAMEWORKS)} or 'module:Class', got {value!r}"
            )
        return value

    @field_validator("queue", "fallback")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return None if value is None else check_queue(value)

    @field_validator("devices")
    @classmethod
    def _device_list(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("an empty device list places the model nowhere; leave it out")
        if any(i < 0 for i in value):
            raise ValueError(f"device indices start at 0, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"a device is listed twice in {list(value)}")
        return value

    @field_validator("artifact")
    @classmethod
    def _relative_artifact(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = Path(value).parts
        if Path(value).is_absolute() or ".." in parts or not parts:
            raise ValueError(f"must be a folder inside the models folder, got {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Route:
        if self.fallback is not None and self.fallback == self.queue:
            raise ValueError(f"fallback {self.fallback!r} is the route's own queue")
        if self.devices is not None and self.queue != "gpu":
            raise ValueError(
                f"'devices' places a model on GPUs, so 'queue' must be 'gpu', got {self.queue!r}"
            )
        if self.devices is not None and self.fallback in self.placement:
            raise ValueError(f"fallback {self.fallback!r} is one of the route's device queues")
        if self.soft_time_limit_s <= 0:
            raise ValueError("time_limit_s is too small to leave a grace period")
        return self

    @property
    def soft_time_limit_s(self) -> float:
        # The task is told to stop a little before it is killed, so that it can
        # report a clear error instead of dying silently.
        return self.time_limit_s - min(1.0, self.time_limit_s * 0.1)

    @property
    def artifact_dir(self) -> str:
        return self.artifact or f"{self.name}/{self.version}"

    @property
    def placement(self) -> tuple[str, ...]:
        """The queues that are the route's first choice: ``queue``, or one
        ``gpu.<i>`` per listed device."""
        if self.devices is not None:
            return tuple(f"gpu.{i}" for i in self.devices)
        return (self.queue,)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue the route's jobs can land on, its fallback last."""
        return self.placement if self.fallback is None else (*self.placement, self.fallback)


# The built-in ways an ensemble combines its members' answers; anything else
# must be an importable ``module:function``.
COMBINERS = ("vote", "mean", "concat")
_CALLABLE_RE = re.compile(r"^[\w.]+:\w+$")


class FlowStep(StrictModel):
    """One step of a pipeline: a served model, or a transform (an operator's
    ``module:function`` taking the rows and answering one row per row), run on
    ``queue``."""

    model: str | None = None
    transform: str | None = None
    queue: str | None = None
    # A transform's output, when known (for the check against the next step).
    output: OutputSchema | None = None

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        return None if value is None else check_queue(value)

    @field_validator("transform")
    @classmethod
    def _callable(cls, value: str | None) -> str | None:
        if value is not None and not _CALLABLE_RE.match(value):
            raise ValueError(f"expected 'module:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> FlowStep:
        if (self.model is None) == (self.transform is None):
            raise ValueError("a step names either 'model' or 'transform' (module:function)")
        if self.model is not None and (self.queue is not None or self.output is not None):
            raise ValueError("a model step runs where its model's route says: "
                             "'queue' and 'output' belong to transform steps")
        return self

    @property
    def label(self) -> str:
        return self.model or self.transform or "?"


class Flow(StrictModel):
    """A model made of others: a pipeline (``steps``, each step's output the
    next one's input) or an ensemble (``ensemble``: its members run on the same
    input in parallel, on their own queues, and ``combine`` makes one answer)."""

    name: str
    steps: list[FlowStep] | None = None
    ensemble: list[str] | None = None
    combine: str | None = None
    # Where an ensemble's combine step runs.
    combine_queue: str = "cpu"
    time_limit_s: float = Field(gt=0, le=24 * 3600)
    queue_timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    max_rows: int | None = Field(default=None, ge=1)
    # Micro-batching of its requests in the router (as a route's): by default
    # its first model's.
    max_batch: int | None = Field(default=None, ge=1, le=65_536)
    max_delay_ms: float | None = Field(default=None, ge=0, le=10_000)

    @field_validator("combine_queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        return check_queue(value)

    @field_validator("combine")
    @classmethod
    def _combiner(cls, value: str | None) -> str | None:
        if value is not None and value not in COMBINERS and not _CALLABLE_RE.match(value):
            raise ValueError(f"expected one of {', '.join(COMBINERS)} or 'module:function', "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> Flow:
        if (self.steps is None) == (self.ensemble is None):
            raise ValueError("a composed model has either 'steps' (a pipeline) or "
                             "'ensemble' (models run side by side), not both")
        if self.steps is not None:
            if not self.steps:
                raise ValueError("steps: a pipeline needs at least one step")
            if self.combine is not None:
                raise ValueError("'combine' belongs to an ensemble, not to a pipeline")
        if self.ensemble is not None:
            if len(self.ensemble) < 2:
                raise ValueError("ensemble: name at least two models")
            if len(set(self.ensemble)) != len(self.ensemble):
                raise ValueError(f"ensemble: a model is listed twice in {self.ensemble}")
        return self

    @property
    def combiner(self) -> str:
        """How an ensemble combines (``vote`` unless it says)."""
        return self.combine or "vote"

    @property
    def kind(self) -> str:
        return "pipeline" if self.steps is not None else "ensemble"

    @property
    def models(self) -> list[str]:
        """The served models it runs, in order."""
        if self.ensemble is not None:
            return list(self.ensemble)
        return [s.model for s in self.steps or () if s.model is not None]


class RouteTable(StrictModel):
    routes: dict[str, Route]
    queues: dict[str, QueueConfig]
    defaults: Defaults
    source: str = "<memory>"
    # Pipelines and ensembles, by name (never also a route's name).
    flows: dict[str, Flow] = Field(default_factory=dict)

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def require(self, name: str) -> Route:
        """The route for model ``name``, or ``UnknownModel`` naming the known ones."""
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted([*self.routes, *self.flows])) or "none"
            raise UnknownModel(f"unknown model {name!r}; known models: {known}")
        return route

    def queue_config(self, queue: str) -> QueueConfig:
        return self.queues.get(queue) or QueueConfig(max_depth=self.defaults.max_depth)

    @property
    def max_time_limit_s(self) -> float:
        return max((r.time_limit_s for r in self.routes.values()), default=0.0)

    def routes_for_queues(self, queues: set[str]) -> list[Route]:
        """The routes whose work can land on any of these queues (own or fallback)."""
        return [r for r in self.routes.values() if set(r.queues) & queues]
