"""Pipelines and ensembles in the route table, checked at load: every step's
model is a served route, each step's output fits the next step's input, and
an ensemble's members take the same input and answer what its ``combine``
can combine. Pure: nothing here reads a model or a file."""

from __future__ import annotations

from typing import Any, Literal

from turnout.core.inputs import InputKind, Tabular, Tensor, Text
from turnout.core.routes.schema import Flow, OutputSchema, Route

# Frameworks whose answer per row is known from the framework alone.
_OUTPUTS: dict[str, Literal["vector"]] = {"embedding": "vector"}


def output_of(route: Route) -> OutputSchema | None:
    """What ``route`` answers per row: its ``output``, or what its framework
    says (an embedding model answers a vector), or None when unknown."""
    if route.output is not None:
        return route.output
    kind = _OUTPUTS.get(route.framework)
    if kind is None:
        return None
    width = route.options.get("dimensions")
    return OutputSchema(kind=kind, width=int(width) if isinstance(width, int) else None)


def misfit(output: OutputSchema | None, schema: InputKind) -> str | None:
    """Why rows of ``output`` cannot be the rows of ``schema``, or None when
    they can (or when either side is not known well enough to tell)."""
    if output is None:
        return None
    if isinstance(schema, Tabular):
        if output.kind != "vector":
            return f"it takes rows of {schema.width} numbers, and the step before answers a {output.kind} per row"
        if output.width is not None and output.width != schema.width:
            return f"it takes rows of {schema.width} numbers, and the step before answers vectors of {output.width}"
        return None
    if isinstance(schema, Text):
        if output.kind in ("vector", "number"):
            return f"it takes text, and the step before answers a {output.kind} per row"
        return None
    if isinstance(schema, Tensor):
        return None if output.kind == "vector" else (
            f"it takes tensors, and the step before answers a {output.kind} per row")
    return f"it takes {schema.summary()}, which no step's answer is"


def check_flow(flow: Flow, routes: dict[str, Route], flows: dict[str, Flow]) -> list[str]:
    """Every problem with ``flow``, each naming its key (``steps[1]``) and what
    was wrong; an empty list when it is sound."""
    problems: list[str] = []

    def served(name: str, where: str) -> Route | None:
        if name in flows:
            problems.append(f"{where}: {name!r} is itself a pipeline or ensemble; a step "
                            "names a served model")
            return None
        route = routes.get(name)
        if route is None:
            known = ", ".join(sorted(routes)) or "none"
            problems.append(f"{where}: unknown model {name!r}; known models: {known}")
        return route

    if flow.steps is not None:
        before: OutputSchema | None = None
        before_label = ""
        for i, step in enumerate(flow.steps):
            where = f"steps[{i}]"
            if step.model is None:
                before, before_label = step.output, f"transform {step.transform}"
                continue
            route = served(step.model, where)
            if route is None:
                before = None
                continue
            if i > 0:
                why = misfit(before, route.input)
                if why:
                    problems.append(f"{where} (model {route.name!r}) cannot take the output of "
                                    f"steps[{i - 1}] ({before_label}): {why}")
            before, before_label = output_of(route), f"model {route.name!r}"
        return problems

    members = [(name, served(name, f"ensemble[{i}]")) for i, name in enumerate(flow.ensemble or ())]
    found = [(name, r) for name, r in members if r is not None]
    if found:
        first_name, first = found[0]
        for name, route in found[1:]:
            if route.input.describe() != first.input.describe():
                problems.append(
                    f"ensemble: {name!r} takes {route.input.summary()} and {first_name!r} takes "
                    f"{first.input.summary()}: an ensemble's members share one input")
    for name, route in found:
        out = output_of(route)
        if out is None:
            continue
        if flow.combiner == "vote" and out.kind == "vector":
            problems.append(f"combine: vote counts labels, and {name!r} answers vectors "
                            "(use mean or concat)")
        if flow.combiner == "mean" and out.kind in ("label", "text"):
            problems.append(f"combine: mean averages numbers, and {name!r} answers a "
                            f"{out.kind} (use vote)")
    return problems


def flow_input(flow: Flow, routes: dict[str, Route]) -> InputKind | None:
    """The input a flow takes: its first model's (a pipeline that starts with
    a transform takes what that model takes after it, unchecked)."""
    first = flow.models[0] if flow.models else None
    route = routes.get(first) if first else None
    return route.input if route is not None else None


def describe_steps(flow: Flow) -> list[dict[str, Any]]:
    """The steps as ``GET /v1/models`` shows them."""
    if flow.steps is not None:
        return [{"model": s.model} if s.model else {"transform": s.transform, "queue": s.queue or "cpu"}
                for s in flow.steps]
    return [*({"model": m} for m in flow.ensemble or ()),
            {"combine": flow.combiner, "queue": flow.combine_queue}]
