"""The operator's route table (``configs/routes.yaml``): its typed shape
(``schema``) and how a file becomes one (``loading``)."""

from turnout.core.routes.loading import (
    ADDED_ROUTE,
    added_routes,
    compose,
    load_routes,
    parse_routes,
)
from turnout.core.routes.schema import (
    FRAMEWORKS,
    QUEUE_RE,
    Defaults,
    InputSchema,
    QueueConfig,
    RetryPolicy,
    Route,
    RouteTable,
    check_queue,
)

__all__ = [
    "ADDED_ROUTE",
    "FRAMEWORKS",
    "QUEUE_RE",
    "Defaults",
    "InputSchema",
    "QueueConfig",
    "RetryPolicy",
    "Route",
    "RouteTable",
    "added_routes",
    "check_queue",
    "compose",
    "load_routes",
    "parse_routes",
]
