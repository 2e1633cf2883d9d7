"""The lifecycle's pure decisions: which version a request goes to, when a
rollout is ready or failed, and how a worker sums up its children."""

from __future__ import annotations

import random

from turnout.core.messages import Heartbeat
from turnout.core.routes import parse_routes
from turnout.core.serving import Canary, Serving, bucket, choose_version, rollout_state
from turnout.workers.heartbeat import merge_versions

TABLE = parse_routes({"models": {"iris": {"framework": "sklearn", "version": 1, "queue": "cpu",
                                          "input": {"kind": "tabular", "width": 4}}}})
ROUTE = TABLE.routes["iris"]


def worker(name: str, **states: str) -> Heartbeat:
    return Heartbeat.from_wire({"name": name, "models": ["iris"],
                                "versions": {"iris": {v: {"state": s} for v, s in states.items()}}})


def test_the_default_is_the_route_tables_until_changed() -> None:
    assert Serving().default_for(ROUTE) == "1"
    assert Serving(default="3").default_for(ROUTE) == "3"
    assert Serving(default="3", canary=Canary("4", 5), target="5").wanted(ROUTE) == {"3", "4", "5"}


def test_a_canary_takes_its_share_only_when_ready() -> None:
    serving = Serving(canary=Canary("2", 10))
    draws = random.Random(1)
    picks = [choose_version(ROUTE, serving, True, None, draws.random() * 100) for _ in range(10_000)]
    assert 0.09 <= picks.count("2") / len(picks) <= 0.11
    assert {choose_version(ROUTE, serving, False, None, 0.0) for _ in range(100)} == {"1"}


def test_a_route_key_always_lands_on_the_same_side() -> None:
    serving = Serving(canary=Canary("2", 50))
    for key in ("alice", "bob", "carol"):
        assert len({choose_version(ROUTE, serving, True, key, random.random() * 100)
                    for _ in range(50)}) == 1
    places = [bucket("iris", f"user-{i}") for i in range(5000)]
    assert 0.45 <= sum(p < 50 for p in places) / len(places) <= 0.55
    assert bucket("iris", "alice") != bucket("other", "alice")


def test_a_rollout_is_ready_only_where_every_serving_worker_has_it() -> None:
    a, b = worker("a", **{"1": "ready", "2": "ready"}), worker("b", **{"1": "ready", "2": "loading"})
    assert rollout_state("iris", "2", [a, b])[0] == "loading"
    b = worker("b", **{"1": "ready", "2": "ready"})
    assert rollout_state("iris", "2", [a, b]) == ("ready", [])
    # A worker that serves no version of the model does not hold it up.
    assert rollout_state("iris", "2", [a, Heartbeat.from_wire({"name": "gpu", "versions": {}})])[0] == "ready"
    assert rollout_state("iris", "2", [])[0] == "loading"


def test_a_failure_counts_only_for_the_generation_it_answers() -> None:
    failed = Heartbeat.from_wire({"name": "a", "models": ["iris"], "versions": {"iris": {
        "1": {"state": "ready"}, "2": {"state": "failed", "reason": "bad sha", "generation": 3}}}})
    assert rollout_state("iris", "2", [failed], generation=3) == ("failed", ["worker a: bad sha"])
    # Asked again (generation 4): the old failure is not the answer.
    assert rollout_state("iris", "2", [failed], generation=4)[0] == "loading"


def test_a_worker_sums_up_its_children() -> None:
    ready = {"iris": {"1": {"state": "ready"}, "2": {"state": "ready"}}}
    half = {"iris": {"1": {"state": "ready"}, "2": {"state": "loading"}}}
    broken = {"iris": {"1": {"state": "ready"}, "2": {"state": "failed", "reason": "x"}}}
    assert merge_versions([ready, ready])["iris"]["2"].to_wire() == {"state": "ready"}
    assert merge_versions([ready, half])["iris"]["2"].to_wire() == {"state": "loading"}
    assert merge_versions([ready, {"iris": {"1": {"state": "ready"}}}])["iris"]["2"].state == "loading"
    assert merge_versions([ready, broken])["iris"]["2"].state == "failed"


def test_the_serving_document_round_trips() -> None:
    doc = Serving(default="2", previous="1", canary=Canary("3", 12.5), target="4", generation=7)
    assert Serving.from_json(doc.to_json()) == doc
    assert doc.evolve(target=None).generation == 8


def test_a_worker_serves_a_model_only_once_every_ready_child_holds_it() -> None:
    from dataclasses import dataclass

    from turnout.core.settings import Settings
    from turnout.workers.heartbeat import HeartbeatThread
    from turnout.workers.spec import WorkerSpec

    @dataclass
    class Board:
        children: list[dict[str, object]]

        def read(self) -> list[dict[str, object]]:
            return self.children

    @dataclass
    class App:
        board: Board
        models: list[str]
        incarnation: str = "cpu@h#1"

        def all_loaded(self) -> bool:
            return True

    old = {"iris": {"1": {"state": "ready"}}}
    new = {**old, "iris-b": {"1": {"state": "ready"}}}
    board = Board([
        {"pid": 1, "ready": True, "models": ["iris", "iris-b"], "versions": new},
        {"pid": 2, "ready": True, "models": ["iris"], "versions": old},  # not reloaded yet
        {"pid": 3, "ready": False, "models": []},  # replaced, still loading
    ])
    spec = WorkerSpec("cpu", "cpu@h", ("cpu",), 3, 4, False, "cpu", "cpu")
    thread = HeartbeatThread(spec, Settings(), App(board, ["iris"]))  # type: ignore[arg-type]
    beat = thread.current()
    assert beat.models == ("iris",) and beat.serves("iris") and not beat.serves("iris-b")
    board.children[1] = {"pid": 2, "ready": True, "models": ["iris", "iris-b"], "versions": new}
    assert thread.current().serves("iris-b", "1")
