"""The operator's route table (``configs/routes.yaml``): its typed shape
(``schema``) and how a file becomes one (``loading``)."""

from turnout.core.routes.flows import check_flow, describe_steps, flow_input, output_of
from turnout.core.routes.loading import (
    ADDED_ROUTE,
    added_routes,
    compose,
    load_routes,
    parse_routes,
)
from turnout.core.routes.schema import (
    COMBINERS,
    FRAMEWORKS,
    QUEUE_RE,
    Defaults,
    Flow,
    FlowStep,
    InputSchema,
    OutputSchema,
    QueueConfig,
    RetryPolicy,
    Route,
    RouteTable,
    check_queue,
)

__all__ = [
    "ADDED_ROUTE",
    "COMBINERS",
    "FRAMEWORKS",
    "QUEUE_RE",
    "Defaults",
    "Flow",
    "FlowStep",
    "InputSchema",
    "OutputSchema",
    "QueueConfig",
    "RetryPolicy",
    "Route",
    "RouteTable",
    "added_routes",
    "check_flow",
    "check_queue",
    "compose",
    "describe_steps",
    "flow_input",
    "load_routes",
    "output_of",
    "parse_routes",
]
