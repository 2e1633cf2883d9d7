"""The routing decision as a table: route, live state -> queue or error."""

from __future__ import annotations

import pytest
import yaml

from router.errors import NoCapacity, QueueFull
from router.routes import parse_routes
from router.routing import LiveState, choose_queue

TABLE = parse_routes(
    yaml.safe_load(
        """
queues:
  cpu: {max_depth: 100}
  gpu: {max_depth: 10}
models:
  iris: {framework: sklearn, version: 1, queue: cpu, input: {width: 4}}
  cnn: {framework: torch, version: 1, queue: gpu, fallback: cpu, input: {width: 64}}
  pinned: {framework: torch, version: 1, queue: gpu.1, input: {width: 64}}
"""
    )
)

BOTH = {"cpu": 1, "gpu": 2}


@pytest.mark.parametrize(
    ("model", "consumers", "depths", "queue", "fallback_used"),
    [
        ("iris", BOTH, {}, "cpu", False),
        ("cnn", BOTH, {}, "gpu", False),
        ("cnn", {"cpu": 1}, {}, "cpu", True),  # no GPU worker: fallback
        ("cnn", {"cpu": 1, "gpu": 0}, {}, "cpu", True),
        ("cnn", BOTH, {"gpu": 10}, "cpu", True),  # GPU queue full: fallback
        ("cnn", BOTH, {"gpu": 9}, "gpu", False),  # one below the limit
        ("pinned", {"gpu.1": 1}, {}, "gpu.1", False),
    ],
)
def test_chosen_queue(model: str, consumers: dict[str, int], depths: dict[str, int], queue: str, fallback_used: bool) -> None:
    decision = choose_queue(TABLE.routes[model], TABLE, LiveState(consumers, depths))
    assert (decision.queue, decision.fallback_used) == (queue, fallback_used)


@pytest.mark.parametrize(
    ("model", "consumers", "depths", "error", "message"),
    [
        ("iris", {"gpu": 1}, {}, NoCapacity, "model 'iris': no live worker consumes queue 'cpu' and the route has no fallback; start one with `turnout worker cpu`"),
        ("cnn", {}, {}, NoCapacity, "model 'cnn': no live worker consumes queue 'gpu' or 'cpu'; start one with `turnout worker gpu"),
        ("pinned", {"gpu": 3}, {}, NoCapacity, "queue 'gpu.1' and the route has no fallback"),
        ("iris", {"cpu": 1}, {"cpu": 100}, QueueFull, "queue 'cpu' for model 'iris' is full (100 jobs waiting, limit 100)"),
        ("cnn", BOTH, {"gpu": 10, "cpu": 500}, QueueFull, "queue 'gpu' for model 'cnn' is full"),
        ("cnn", {"gpu": 1}, {"gpu": 12}, QueueFull, "queue 'gpu' for model 'cnn' is full (12 jobs waiting, limit 10)"),
    ],
)
def test_refusals(model: str, consumers: dict[str, int], depths: dict[str, int], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        choose_queue(TABLE.routes[model], TABLE, LiveState(consumers, depths))
    assert message in str(err.value)


def test_queue_full_suggests_when_to_retry() -> None:
    with pytest.raises(QueueFull) as err:
        choose_queue(TABLE.routes["iris"], TABLE, LiveState({"cpu": 1}, {"cpu": 5000}))
    assert 1 <= err.value.retry_after_s <= 30


def test_before_the_first_look_at_redis_the_table_decides() -> None:
    decision = choose_queue(TABLE.routes["cnn"], TABLE, LiveState(known=False))
    assert decision.queue == "gpu" and not decision.fallback_used
