"""Reading ``configs/routes.yaml``: ``load_routes(path)`` is the one way in.

A bad file raises ``ConfigError`` whose message names the key
(``models.iris.queue``) and its line in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from turnout.core.errors import ConfigError
from turnout.core.inputs import KINDS
from turnout.core.routes.flows import check_flow
from turnout.core.routes.schema import (
    MODEL_NAME_RE,
    Defaults,
    Flow,
    QueueConfig,
    Route,
    RouteTable,
    StrictModel,
    check_queue,
)


class _File(StrictModel):
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
    flows: dict[str, Flow] = {}
    d = shape.defaults
    for name, raw in shape.models.items():
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{source}: models.{name}{_line(text, ('models', name))}: expected a mapping"
            )
        if "steps" in raw or "ensemble" in raw:
            try:
                flows[name] = Flow.model_validate(
                    {"time_limit_s": d.time_limit_s, **raw, "name": name})
            except ValidationError as exc:
                raise ConfigError(_describe(exc, source, text, prefix=("models", name))) from None
            continue
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
    for name, flow in flows.items():
        problems = check_flow(flow, routes, flows)
        if problems:
            where = f"models.{name}{_line(text, ('models', name))}"
            raise ConfigError(f"{source}: {where}: " + "; ".join(problems))
    return RouteTable(routes=routes, queues=shape.queues, defaults=shape.defaults, source=source,
                      flows=flows)


def load_routes(path: Path | str) -> RouteTable:
    """Read and validate the route table at ``path``."""
    text, data = _read(Path(path))
    return parse_routes(data, source=str(path), text=text)


def _read(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the route table {path}: {exc.strerror}") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


ADDED_ROUTE = "route.yaml"


def added_routes(models_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The routes ``turnout models add`` wrote: ``<models>/<name>/route.yaml``
    (as Triton keeps a model's ``config.pbtxt`` beside its versions)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    if not models_dir.is_dir():
        return found
    for path in sorted(models_dir.glob(f"*/{ADDED_ROUTE}")):
        name = path.parent.name
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read it: {exc}") from None
        if not isinstance(data, Mapping) or not MODEL_NAME_RE.match(name):
            raise ConfigError(f"{path}: expected a mapping of route keys")
        found[name] = (path, dict(data))
    return found


def compose(routes_file: Path | str, models_dir: Path | str) -> tuple[str, RouteTable]:
    """The table in force: the operator's file, plus every added model's route;
    for a model in both, the operator's keys override the added ones.
    Returns the composed document's YAML (what is published) and its table."""
    routes_file, models_dir = Path(routes_file), Path(models_dir)
    text, data = _read(routes_file)
    added = added_routes(models_dir)
    if not added:
        return text, parse_routes(data, source=str(routes_file), text=text)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{routes_file}: expected a mapping with a 'models' key at the top")
    data = dict(data)
    models = dict(data.get("models") or {})
    for name, (path, fragment) in added.items():
        own = models.get(name)
        if not isinstance(own, Mapping):
            # Checked alone first, so that an error names its own file.
            parse_routes({"models": {name: fragment}}, source=str(path), text=path.read_text())
            models[name] = fragment
        else:
            models[name] = {**fragment, **own}
    data["models"] = models
    table = parse_routes(data, source=str(routes_file), text=text)
    return yaml.safe_dump(data, sort_keys=False), table


def _describe(exc: ValidationError, source: str, text: str | None, prefix: tuple) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = prefix + _untagged(tuple(err["loc"]))
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


def _untagged(loc: tuple) -> tuple:
    """``loc`` without the tag pydantic puts after ``input`` (the input kind's
    name): the key path as the operator wrote it."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i and loc[i - 1] == "input" and part in KINDS))


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
