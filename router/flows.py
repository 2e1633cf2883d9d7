"""Pipelines and ensembles from the router's side: the plan a request will
run (each model's version chosen now, each step's queue admitted now), and
the first messages (a pipeline's first step, or every branch of an
ensemble), queued with the request's record in one MULTI. What the workers
do with them is workers/flows.py's."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from turnout.core.celery_app import TASK_PREDICT
from turnout.core.errors import InvalidInput, NoCapacity
from turnout.core.flows import COMBINE, ENSEMBLE, MODEL, PIPELINE, TRANSFORM, FlowSpec, PlanStep
from turnout.core.messages import RequestItem
from turnout.core.redis_keys import DEFAULT_LANE
from turnout.core.routes import Flow, RouteTable
from turnout.core.serving import choose_version
from turnout.core.task_messages import QueuedMessage, TaskMessages, expires_backstop
from turnout.router.live import LiveView
from turnout.router.routing import choose_queue
from turnout.router.schemas import VersionSchemas
from turnout.router.validation import validate_inputs


def _consumed(live: LiveView, queue: str, what: str) -> None:
    if live.state.known and not live.state.consumers(queue):
        raise NoCapacity(f"{what} runs on queue {queue!r}, which no live worker consumes; "
                         f"start one (`turnout worker cpu`)")


def plan_for(flow: Flow, table: RouteTable, live: LiveView, timeout_s: float | None,
             priority: str, route_key: str | None = None) -> tuple[PlanStep, ...]:
    """The steps as this request will run them: each model at the version
    its route serves now (or a canary's share), on the queue routing picks
    now; 429 or 503 now, not at a later step, when one cannot take it."""
    steps: list[PlanStep] = []

    def model_step(name: str) -> PlanStep:
        route = table.require(name)
        serving = live.serving_for(name)
        canary = serving.canary
        ready = canary is not None and live.ready_everywhere(name, canary.version)
        version = choose_version(route, serving, ready, route_key, random.random() * 100)
        decision = choose_queue(route, table, live.state, None, timeout_s, priority)
        return PlanStep(MODEL, name, decision.queue, version, route.time_limit_s)

    if flow.steps is not None:
        for i, step in enumerate(flow.steps):
            if step.model is not None:
                steps.append(model_step(step.model))
            else:
                queue = step.queue or "cpu"
                _consumed(live, queue, f"step {i} of {flow.name!r} ({step.transform})")
                steps.append(PlanStep(TRANSFORM, str(step.transform), queue, "", flow.time_limit_s))
    else:
        steps += [model_step(m) for m in flow.ensemble or ()]
        _consumed(live, flow.combine_queue, f"the combine step of {flow.name!r}")
        steps.append(PlanStep(COMBINE, flow.combiner, flow.combine_queue, "", flow.time_limit_s))
    return tuple(steps)


def flow_rows(flow: Flow, table: RouteTable, schemas: VersionSchemas, plan: tuple[PlanStep, ...],
              inputs: Any, max_rows: int | None = None) -> list[Any]:
    """The request's rows, checked against what its first model takes (at
    the version chosen for it); a pipeline that starts with a transform
    takes any rows, which its transform is to make sense of."""
    first = next((s for s in plan if s.kind == MODEL), None)
    route = table.routes[first.name] if first is not None else None
    limit = max_rows or flow_max_rows(flow, table)
    if first is not None and route is not None and plan[0].kind == MODEL:
        return validate_inputs(route, inputs, limit, schemas.input(route, first.version))
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs: expected a non-empty list of rows")
    if len(inputs) > limit:
        raise InvalidInput(f"inputs: {len(inputs)} rows, but model {flow.name!r} takes at most "
                           f"{limit} per request")
    return list(inputs)


def flow_max_rows(flow: Flow, table: RouteTable) -> int:
    """The most rows one request may carry: the flow's ``max_rows``, or its
    first model's."""
    if flow.max_rows:
        return flow.max_rows
    first = flow.models[0] if flow.models else None
    route = table.routes.get(first) if first else None
    return route.max_rows if route is not None else table.defaults.max_rows


@dataclass(frozen=True)
class FlowBatching:
    """How a composed model's requests gather into one task in the router
    (``router/batching.py``): its own ``max_batch``/``max_delay_ms``, or its
    first model's."""

    name: str
    max_batch: int | None
    max_delay_ms: float | None
    time_limit_s: float
    # The first model, whose workers' free slots say when to send at once.
    first: str

    @classmethod
    def of(cls, flow: Flow, table: RouteTable) -> FlowBatching:
        first = flow.models[0] if flow.models else ""
        route = table.routes.get(first)
        return cls(flow.name,
                   flow.max_batch if flow.max_batch is not None else (route.max_batch if route else None),
                   flow.max_delay_ms if flow.max_delay_ms is not None else (
                       route.max_delay_ms if route else None),
                   flow.time_limit_s * max(1, len(flow.steps or flow.ensemble or ())), first)


def plan_key(plan: tuple[PlanStep, ...]) -> str:
    """One string per plan: requests batch together only on the same one."""
    return "|".join(f"{s.kind}:{s.name}@{s.version}:{s.queue}" for s in plan)


def first_messages(messages: TaskMessages, flow: Flow, plan: tuple[PlanStep, ...],
                   flow_id: str, requests: list[RequestItem],
                   lane: str = DEFAULT_LANE) -> list[tuple[str, QueuedMessage]]:
    """(queue, message) of each first task of request batch ``flow_id``: a
    pipeline's first step, or every branch of an ensemble (each on its own
    model's queue)."""
    kind = PIPELINE if flow.steps is not None else ENSEMBLE
    starts = range(len(plan) - 1) if kind == ENSEMBLE else range(1)
    items = [r.to_wire() for r in requests]
    out = []
    for at in starts:
        step = plan[at]
        this = FlowSpec(flow_id, flow.name, kind, plan, at, lane)
        out.append((step.queue, messages.build(
            TASK_PREDICT, this.task_id(), step.queue,
            (flow.name, items, {"flow": this.to_wire()}),
            step.time_limit_s, step.soft_time_limit_s, lane=lane,
            expires=expires_backstop(step.time_limit_s, [r.deadline for r in requests]),
            argsrepr=f"({flow.name!r}, {len(items)} request(s), step {at}: {step.name})")))
    return out
