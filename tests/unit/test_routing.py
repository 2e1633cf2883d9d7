"""The routing decision as a table: route, live state -> queue or error."""

from __future__ import annotations

import pytest
import yaml

from turnout.core.errors import NoCapacity, QueueFull
from turnout.core.routes import parse_routes
from turnout.router.routing import LiveState, LiveWorker, candidates, choose_queue

TABLE = parse_routes(
    yaml.safe_load(
        """
queues:
  cpu: {max_depth: 100}
  gpu: {max_depth: 10}
  gpu.0: {max_depth: 10}
  gpu.2: {max_depth: 10}
models:
  iris: {framework: sklearn, version: 1, queue: cpu, input: {width: 4}}
  cnn: {framework: torch, version: 1, queue: gpu, fallback: cpu, input: {width: 64}}
  pinned: {framework: torch, version: 1, queue: gpu.1, input: {width: 64}}
  placed: {framework: torch, version: 1, queue: gpu, devices: [0, 2], fallback: cpu, input: {width: 64}}
  big: {framework: torch, version: 1, queue: gpu, input: {width: 64}}
"""
    )
)
ALL = frozenset(TABLE.routes)


def cpu(name: str = "cpu@h", models: frozenset[str] = ALL) -> LiveWorker:
    return LiveWorker(name, frozenset({"cpu"}), models)


def gpu(i: int, models: frozenset[str] = ALL, free: float | None = None, refused: dict[str, str] | None = None, busy: int = 0) -> LiveWorker:
    return LiveWorker(
        f"gpu{i}@h", frozenset({"gpu", f"gpu.{i}"}), models, refused or {}, f"gpu.{i}", free, busy
    )


def state(*workers: LiveWorker, depths: dict[str, int] | None = None) -> LiveState:
    return LiveState(tuple(workers), dict(depths or {}))


@pytest.mark.parametrize(
    ("model", "live", "queue", "fallback_used"),
    [
        ("iris", state(cpu(), gpu(0)), "cpu", False),
        ("cnn", state(cpu(), gpu(0)), "gpu", False),
        ("cnn", state(cpu()), "cpu", True),  # no GPU worker: fallback
        ("cnn", state(cpu(), gpu(0), depths={"gpu": 10}), "cpu", True),  # GPU queue full
        ("cnn", state(cpu(), gpu(0), depths={"gpu": 9}), "gpu", False),  # one below the limit
        # A GPU worker that is up but has not loaded the model does not count.
        ("cnn", state(cpu(), gpu(0, models=frozenset({"iris"}))), "cpu", True),
        ("pinned", state(gpu(1)), "gpu.1", False),
        # Placement: only the listed devices, the least queued first...
        ("placed", state(gpu(0), gpu(2, busy=1)), "gpu.0", False),  # gpu.2 is running a job
        ("placed", state(gpu(0), gpu(2), depths={"gpu.0": 3, "gpu.2": 1}), "gpu.2", False),
        # ...then the one with the most free memory.
        ("placed", state(gpu(0, free=1000), gpu(2, free=5000)), "gpu.2", False),
        ("placed", state(gpu(0, free=9000), gpu(2, free=5000)), "gpu.0", False),
        # A device that is not listed is never used, even when it is idle.
        ("placed", state(gpu(1), gpu(2), depths={"gpu.2": 5}), "gpu.2", False),
        ("placed", state(cpu(), gpu(1)), "cpu", True),
        ("placed", state(cpu(), gpu(0), gpu(2), depths={"gpu.0": 10, "gpu.2": 10}), "cpu", True),
        # On the shared queue, workers that refused the model are steered
        # around: its jobs go to the devices that hold it.
        ("big", state(gpu(0), gpu(1, models=ALL - {"big"}, refused={"big": "needs ~9000 MiB"})), "gpu.0", False),
    ],
)
def test_chosen_queue(model: str, live: LiveState, queue: str, fallback_used: bool) -> None:
    decision = choose_queue(TABLE.routes[model], TABLE, live)
    assert (decision.queue, decision.fallback_used) == (queue, fallback_used)


@pytest.mark.parametrize(
    ("model", "live", "error", "message"),
    [
        ("iris", state(gpu(0)), NoCapacity, "model 'iris': no live worker that serves it consumes queue 'cpu' and the route has no fallback; start one with `turnout worker cpu`"),
        ("cnn", state(), NoCapacity, "model 'cnn': no live worker that serves it consumes queue 'gpu' or 'cpu'; start one with `turnout worker gpu"),
        ("pinned", state(gpu(0), gpu(2)), NoCapacity, "queue 'gpu.1' and the route has no fallback"),
        ("placed", state(gpu(1)), NoCapacity, "queue 'gpu.0' or 'gpu.2' or 'cpu'"),
        ("big", state(gpu(1, models=ALL - {"big"}, refused={"big": "needs ~9000 MiB, 10 MiB free on the GPU"})), NoCapacity,
         "worker gpu1@h refused it (needs ~9000 MiB, 10 MiB free on the GPU)"),
        ("iris", state(cpu(), depths={"cpu": 100}), QueueFull, "queue 'cpu' for model 'iris' is full (100 jobs waiting, limit 100)"),
        ("cnn", state(cpu(), gpu(0), depths={"gpu": 10, "cpu": 500}), QueueFull, "queue 'gpu' for model 'cnn' is full"),
        ("cnn", state(gpu(0), depths={"gpu": 12}), QueueFull, "queue 'gpu' for model 'cnn' is full (12 jobs waiting, limit 10)"),
    ],
)
def test_refusals(model: str, live: LiveState, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as err:
        choose_queue(TABLE.routes[model], TABLE, live)
    assert message in str(err.value)


def test_queue_full_suggests_when_to_retry() -> None:
    # Before any drain rate is known: a guess, a second per hundred jobs over the limit.
    with pytest.raises(QueueFull) as err:
        choose_queue(TABLE.routes["iris"], TABLE, state(cpu(), depths={"cpu": 5000}))
    assert err.value.retry_after_s == 50
    # With one: the time to drain the 4,901 jobs over the limit at 100 a second
    # (plus up to 20% of jitter).
    live = LiveState((cpu(),), {"cpu": 5000}, drain_per_s={"cpu": 100.0})
    with pytest.raises(QueueFull) as err:
        choose_queue(TABLE.routes["iris"], TABLE, live)
    assert 50 <= err.value.retry_after_s <= 59


def test_a_deadline_the_queue_cannot_meet_is_refused_with_when_it_could() -> None:
    lanes = {"cpu": {"high": 0, "normal": 10, "low": 30}}
    live = LiveState((cpu(),), {"cpu": 40}, lane_depths=lanes, drain_per_s={"cpu": 2.0})
    route = TABLE.routes["iris"]
    # 10 jobs ahead in normal at 2 a second: it starts at the 11th completion,
    # in 5.5 s, over a 2 s timeout; it fits once 7 of them are done, in 3.5 s.
    with pytest.raises(QueueFull, match=r"in about 5.5 s \(10 jobs ahead, draining 2.0/s\)") as err:
        choose_queue(route, TABLE, live, timeout_s=2.0)
    assert 3.5 <= err.value.retry_after_s <= 5
    # No deadline, or a lane with nothing ahead of it, or time enough: admitted.
    assert choose_queue(route, TABLE, live).queue == "cpu"
    assert choose_queue(route, TABLE, live, timeout_s=2.0, lane="high").queue == "cpu"
    assert choose_queue(route, TABLE, live, timeout_s=6.0).queue == "cpu"
    assert live.estimated_wait_s("cpu", "low") == 20.5
    assert live.estimated_wait_s("cpu", "high") == 0.0  # nothing ahead of it


def test_before_the_first_look_at_redis_the_table_decides() -> None:
    decision = choose_queue(TABLE.routes["cnn"], TABLE, LiveState(known=False))
    assert decision.queue == "gpu" and not decision.fallback_used
    assert choose_queue(TABLE.routes["placed"], TABLE, LiveState(known=False)).queue == "gpu.0"


def test_a_burst_spreads_over_devices_when_each_send_is_counted() -> None:
    # What LiveView.note_sent does between two refreshes.
    live = state(gpu(0), gpu(2))
    chosen = []
    for _ in range(6):
        queue = choose_queue(TABLE.routes["placed"], TABLE, live).queue
        live.depths[queue] = live.depths.get(queue, 0) + 1
        chosen.append(queue)
    assert chosen.count("gpu.0") == chosen.count("gpu.2") == 3


def test_equal_devices_share_the_load() -> None:
    live = state(gpu(0), gpu(2))
    chosen = {choose_queue(TABLE.routes["placed"], TABLE, live).queue for _ in range(64)}
    assert chosen == {"gpu.0", "gpu.2"}


def test_candidates_are_ordered_best_first() -> None:
    live = state(gpu(0, free=10), gpu(2, free=20), depths={"gpu.0": 1, "gpu.2": 1})
    assert candidates(TABLE.routes["placed"], live) == ["gpu.2", "gpu.0"]
