"""The operator's route table (``configs/routes.yaml``), loaded into typed settings.

``load_routes(path)`` is the one way in. A bad file raises ``ConfigError`` whose
message names the key (``models.iris.queue``) and its line in the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router.errors import ConfigError, UnknownModel

QUEUE_RE = re.compile(r"^(cpu|gpu|gpu\.(0|[1-9][0-9]*))$")
MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Built-in frameworks; anything else must be an importable ``module:Class``.
FRAMEWORKS = ("sklearn", "torch", "embedding")


def check_queue(value: str) -> str:
    if not QUEUE_RE.match(value):
        raise ValueError(f"expected 'cpu', 'gpu' or 'gpu.<index>', got {value!r}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSchema(_Strict):
    kind: Literal["tabular", "text"] = "tabular"
    # tabular: numbers per row
    width: int | None = Field(default=None, ge=1, le=100_000)
    # text: characters per string
    max_length: int = Field(default=2048, ge=1)

    def describe(self) -> dict[str, Any]:
        """The schema as clients see it, without the fields of the other kind."""
        if self.kind == "tabular":
            return {"kind": "tabular", "width": self.width}
        return {"kind": "text", "max_length": self.max_length}

    @model_validator(mode="after")
    def _width_for_tabular(self) -> InputSchema:
        if self.kind == "tabular" and self.width is None:
            raise ValueError("a tabular input needs 'width' (numbers per row)")
        return self


class RetryPolicy(_Strict):
    max: int = Field(default=2, ge=0, le=20)
    backoff_s: float = Field(default=1.0, ge=0, le=600)


class QueueConfig(_Strict):
    # New work is refused (429) once this many jobs wait in the queue.
    max_depth: int = Field(default=10_000, ge=1)


class Defaults(_Strict):
    time_limit_s: float = Field(default=30.0, gt=0, le=24 * 3600)
    max_rows: int = Field(default=256, ge=1)
    max_depth: int = Field(default=10_000, ge=1)
    retries: RetryPolicy = RetryPolicy()


class Route(_Strict):
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
    max_rows: int = Field(ge=1)
    retries: RetryPolicy
    max_batch: int | None = Field(default=None, ge=1, le=65_536)
    max_delay_ms: float | None = Field(default=None, ge=0, le=10_000)
    # Free-form settings handed to the framework adapter.
    options: dict[str, Any] = Field(default_factory=dict)

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


class RouteTable(_Strict):
    routes: dict[str, Route]
    queues: dict[str, QueueConfig]
    defaults: Defaults
    source: str = "<memory>"

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def require(self, name: str) -> Route:
        """The route for model ``name``, or ``UnknownModel`` naming the known ones."""
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
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


class _File(_Strict):
    """The file's shape, before defaults are folded into each route."""

    defaults: Defaults = Defaults()
    queues: dict[str, QueueConfig] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]]

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: dict[str, QueueConfig]) -> dict[str, QueueConfig]:
        for name in value:
            check_queue(name)
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not value:
            raise ValueError("the table names no model")
        for name in value:
            if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
                raise ValueError(
                    f"model name {name!r}: use lower-case letters, digits, '.', '_' or '-'"
                )
        return value


def parse_routes(data: Any, source: str = "<memory>", text: str | None = None) -> RouteTable:
    """Validate an already-parsed YAML document into a ``RouteTable``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'models' key at the top")
    try:
        shape = _File.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, text, prefix=())) from None
    routes: dict[str, Route] = {}
    for name, raw in shape.models.items():
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{source}: models.{name}{_line(text, ('models', name))}: expected a mapping"
            )
        d = shape.defaults
        fields = {
            "time_limit_s": d.time_limit_s,
            "max_rows": d.max_rows,
            "retries": d.retries,
            **raw,
            "name": name,
        }
        try:
            routes[name] = Route.model_validate(fields)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, source, text, prefix=("models", name))) from None
    return RouteTable(routes=routes, queues=shape.queues, defaults=shape.defaults, source=source)


def load_routes(path: Path | str) -> RouteTable:
    """Read and validate the route table at ``path``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the route table {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_routes(data, source=str(path), text=text)


def _describe(exc: ValidationError, source: str, text: str | None, prefix: tuple) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "(top)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        given = err.get("input")
        quoted = err["type"] in ("missing", "extra_forbidden") or "got " in msg
        if not quoted and not isinstance(given, dict):
            msg += f" (given: {given!r})"
        lines.append(f"{key}{_line(text, loc)}: {msg}")
    return f"{source}: " + "; ".join(lines)


def _line(text: str | None, loc: tuple) -> str:
    """' (line N)' for the deepest key of ``loc`` found in the YAML text."""
    if text is None:
        return ""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    found = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key, value in node.value:
            if key.value == str(part):
                found, node = key, value
                break
        else:
            break
    return f" (line {found.start_mark.line + 1})" if found is not None else ""
