"""Pipelines and ensembles: the route table's checks at load, the hop script
on a real Redis (handed on once, under the lease, with the ack), the combine
functions, and the plan's wire form."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis

from turnout.core import delivery, redis_keys
from turnout.core.errors import ConfigError
from turnout.core.flows import COMBINE, ENSEMBLE, MODEL, PIPELINE, Carried, FlowSpec, PlanStep
from turnout.core.messages import Outcome
from turnout.core.routes import load_routes, parse_routes
from turnout.workers.combine import CombineError, combine

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "iris": {"framework": "sklearn", "version": 1, "queue": "cpu",
             "input": {"kind": "tabular", "width": 4}, "output": {"kind": "label"}},
    "minilm": {"framework": "embedding", "version": 1, "queue": "gpu",
               "input": {"kind": "text"}, "output": {"kind": "vector", "width": 384}},
    "head": {"framework": "sklearn", "version": 1, "queue": "cpu",
             "input": {"kind": "tabular", "width": 384}, "output": {"kind": "label"}},
    "tree": {"framework": "sklearn", "version": 1, "queue": "cpu",
             "input": {"kind": "tabular", "width": 4}, "output": {"kind": "label"}},
}


def _table(**flows: object) -> object:
    return parse_routes({"models": {**BASE, **flows}}, source="routes.yaml")


def test_a_sound_pipeline_and_ensemble_load() -> None:
    table = _table(topic={"steps": [{"model": "minilm"}, {"model": "head"}]},
                   vote={"ensemble": ["iris", "tree"]})
    assert table.flows["topic"].kind == "pipeline"  # type: ignore[attr-defined]
    assert table.flows["vote"].combiner == "vote"  # type: ignore[attr-defined]
    assert "topic" not in table.routes  # type: ignore[attr-defined]


@pytest.mark.parametrize(("flow", "words"), [
    ({"steps": [{"model": "minilm"}, {"model": "iris"}]},
     ("steps[1] (model 'iris') cannot take the output of steps[0] (model 'minilm'): it takes rows "
     "of 4 numbers, and the step before answers vectors of 384")),
    ({"steps": [{"model": "iris"}, {"model": "head"}]},
     ("steps[1] (model 'head') cannot take the output of steps[0] (model 'iris'): it takes rows of "
     "384 numbers, and the step before answers a label per row")),
    ({"steps": [{"model": "iris"}, {"model": "minilm"}, {"model": "nope"}]},
     "steps[2]: unknown model 'nope'"),
    ({"steps": [{"model": "iris", "queue": "gpu"}]}, "'queue' and 'output' belong to transform steps"),
    ({"steps": [{"transform": "not a function"}]}, "expected 'module:function'"),
    ({"steps": []}, "a pipeline needs at least one step"),
    ({"ensemble": ["iris", "minilm"]}, "'minilm' takes text<=2048 and 'iris' takes 4 numbers"),
    ({"ensemble": ["iris"]}, "name at least two models"),
    ({"ensemble": ["iris", "tree"], "combine": "median"}, "expected one of vote, mean, concat"),
    ({"ensemble": ["iris", "tree"], "combine": "mean"}, "mean averages numbers, and 'iris' answers a label"),
    ({"ensemble": ["iris", "tree"], "steps": [{"model": "iris"}]}, "either 'steps'"),
])
def test_a_bad_flow_is_named_at_load(flow: dict, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _table(bad=flow)
    assert "models.bad" in str(caught.value)
    assert words in str(caught.value)


def test_a_transform_with_a_declared_output_is_checked_against_the_next_step() -> None:
    with pytest.raises(ConfigError, match="takes rows of 4 numbers, and the step before answers a text"):
        _table(bad={"steps": [{"transform": "m:f", "output": {"kind": "text"}}, {"model": "iris"}]})
    # An undeclared output is not guessed at.
    _table(ok={"steps": [{"transform": "m:f"}, {"model": "iris"}]})


def test_the_shipped_table_has_a_pipeline_and_an_ensemble() -> None:
    table = load_routes(REPO / "configs" / "routes.yaml")
    assert table.flows["ticket-topic"].models == ["minilm", "ticket-head"]
    assert table.flows["iris-vote"].ensemble == ["iris", "iris-tree", "iris-knn"]


def test_a_plan_round_trips_the_wire() -> None:
    plan = (PlanStep(MODEL, "iris", "cpu", "1", 10.0), PlanStep(MODEL, "tree", "gpu", "2"),
            PlanStep(COMBINE, "vote", "cpu"))
    spec = FlowSpec("f", "vote", ENSEMBLE, plan, 1, "high")
    back = FlowSpec.from_wire(json.loads(json.dumps(spec.to_wire())))
    assert back == spec
    assert back.is_branch and back.branches == 2 and back.following().at == 2
    assert back.task_id() == "f.1"
    pipeline = FlowSpec("p", "p", PIPELINE, plan[:2], 0)
    assert pipeline.following().at == 1 and pipeline.following().reads_input
    assert pipeline.following().is_last and not pipeline.is_last


# -- the hop script, on a real Redis ---------------------------------------------------


def _held(scripts: delivery.Scripts, incarnation: str, task_id: str) -> str:
    tag = str(uuid.uuid4())
    payload = json.dumps([{"headers": {"id": task_id}, "properties": {"delivery_tag": tag}}, "",
                          "gpu"])
    assert delivery.append(scripts, incarnation, tag, payload, task_id)
    return tag


def _hop(scripts: delivery.Scripts, incarnation: str, task_id: str, mode: str, target: str,
         second: str, payload: str, field: str = "", branches: int = 0) -> int:
    script, keys, args = delivery.hop_call(scripts, incarnation, task_id, mode, target, second,
                                           "cpu", payload, 60, message=f"msg-of-{task_id}",
                                           field=field, branches=branches)
    return int(script(keys=keys, args=args))


def _settled(client: redis.Redis, incarnation: str, task_id: str, tag: str) -> bool:
    return (client.hget(delivery.OWNERS, tag) is None and client.hget(delivery.UNACKED, tag) is None
            and client.hget(delivery.LEASES, task_id) is None
            and not client.sismember(delivery.held(incarnation), tag))


def test_a_step_hands_on_once_under_its_lease_and_is_acked_in_the_same_step(
    redis_client: redis.Redis,
) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    delivery.register(redis_client, "b#1")
    tag = _held(scripts, "a#1", "f.0")
    target = redis_keys.flow_input("f", 1)
    # Another incarnation (one that was given the job's old delivery) is fenced.
    assert _hop(scripts, "b#1", "f.0", delivery.HOP_NEXT, target, "gpu", "x") == 0
    assert redis_client.llen("gpu") == 0 and not _settled(redis_client, "a#1", "f.0", tag)
    assert _hop(scripts, "a#1", "f.0", delivery.HOP_NEXT, target, "gpu", "rows") == 1
    assert redis_client.get(target) == b"rows" and 0 < redis_client.ttl(target) <= 60
    assert redis_client.lrange("gpu", 0, -1) == [b"msg-of-f.0"]
    assert redis_client.llen(redis_keys.bell("cpu")) == 1
    assert _settled(redis_client, "a#1", "f.0", tag)
    # Run again (a second delivery that somehow got its lease): not handed on again.
    tag = _held(scripts, "a#1", "f.0")
    assert _hop(scripts, "a#1", "f.0", delivery.HOP_NEXT, target, "gpu", "other") == -1
    assert redis_client.get(target) == b"rows" and redis_client.llen("gpu") == 1
    assert _settled(redis_client, "a#1", "f.0", tag)
    stats = delivery.stats(redis_client)
    assert stats["fenced_hops"] == 1 and stats["duplicate_hops"] == 1


def test_the_branch_that_completes_the_join_queues_the_combine_once(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    join = redis_keys.flow_join("e")
    for b in (2, 0):
        _held(scripts, "a#1", f"e.{b}")
        assert _hop(scripts, "a#1", f"e.{b}", delivery.HOP_JOIN, join, "cpu", f"out{b}",
                    field=str(b), branches=3) == 1
        assert redis_client.llen("cpu") == 0
    _held(scripts, "a#1", "e.1")
    assert _hop(scripts, "a#1", "e.1", delivery.HOP_JOIN, join, "cpu", "out1", field="1",
                branches=3) == 1
    assert redis_client.lrange("cpu", 0, -1) == [b"msg-of-e.1"]
    assert redis_client.hgetall(join) == {b"0": b"out0", b"1": b"out1", b"2": b"out2"}
    # A branch that runs again changes nothing and queues nothing.
    _held(scripts, "a#1", "e.1")
    assert _hop(scripts, "a#1", "e.1", delivery.HOP_JOIN, join, "cpu", "again", field="1",
                branches=3) == -1
    assert redis_client.llen("cpu") == 1 and redis_client.hget(join, "1") == b"out1"


def test_the_last_step_stores_the_requests_result_once_and_publishes_it(
    redis_client: redis.Redis,
) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    pubsub = redis_client.pubsub()
    pubsub.subscribe(redis_keys.result("r"))
    pubsub.get_message(timeout=1)
    _held(scripts, "a#1", "r.2")
    assert _hop(scripts, "a#1", "r.2", delivery.HOP_FINAL, redis_keys.result("r"),
                delivery.done("r"), "doc") == 1
    assert redis_client.get(redis_keys.result("r")) == b"doc"
    got = pubsub.get_message(timeout=2)
    assert got is not None and got["data"] == b"doc"
    # Another step that somehow ends the same request stores nothing.
    _held(scripts, "a#1", "r.1")
    assert _hop(scripts, "a#1", "r.1", delivery.HOP_FINAL, redis_keys.result("r"),
                delivery.done("r"), "second") == 1
    assert redis_client.get(redis_keys.result("r")) == b"doc"
    assert delivery.stats(redis_client)["duplicate_results"] == 1
    pubsub.close()


# -- combining ------------------------------------------------------------------------


def test_vote_takes_the_most_common_label_and_a_tie_goes_to_the_first_member() -> None:
    out, probs = combine("vote", [["a", "b"], ["c", "b"], ["c", "a"]],
                         [[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]], [[0.5, 0.5], [1.0, 0.0]]])
    assert out == ["c", "b"]
    assert probs == [[0.5, 0.5], [1 / 3, 2 / 3]]
    assert combine("vote", [["a"], ["b"]], [None, None]) == (["a"], None)


def test_mean_and_concat() -> None:
    assert combine("mean", [[1.0, [1, 2]], [3.0, [3, 4]]], [None, None])[0] == [2.0, [2.0, 3.0]]
    assert combine("concat", [[[1, 2], 5], [[3], 6]], [None, None])[0] == [[1, 2, 3], [5, 6]]
    with pytest.raises(CombineError, match="not a number"):
        combine("mean", [["a"], ["b"]], [None, None])
    with pytest.raises(CombineError, match="different numbers of rows"):
        combine("vote", [["a"], ["b", "c"]], [None, None])


def test_an_operators_combiner_is_imported_and_checked() -> None:
    assert combine("tests.support.flows:first_of", [["a"], ["b"], ["b"]], [None] * 3)[0] == ["b"]
    with pytest.raises(CombineError, match="cannot import"):
        combine("tests.support.nowhere:f", [["a"]], [None])


def test_carried_outcomes_round_trip() -> None:
    carried = Carried([Outcome(predictions=[1]), Outcome(error="x"), Outcome(revoked=True)],
                      [{"model": "m"}])
    back = Carried.decode(carried.encode())
    assert [o.to_wire() for o in back.outcomes] == [o.to_wire() for o in carried.outcomes]
    assert back.steps == [{"model": "m"}]
