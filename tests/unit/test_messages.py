"""The typed messages: each round-trips through its JSON, and a message no
version of Turnout writes is refused where it arrives, saying why."""

from __future__ import annotations

import orjson
import pytest

from turnout.core.messages import (
    GpuFigures,
    Heartbeat,
    MessageError,
    Outcome,
    RequestItem,
    ResultDoc,
    TaskResult,
    VersionState,
)


def test_a_request_item_is_an_object_not_a_positional_list() -> None:
    item = RequestItem("t-1", [[1.0, 2.0]], 1700000000.5)
    wire = orjson.loads(orjson.dumps(item.to_wire()))
    assert wire == {"id": "t-1", "rows": [[1.0, 2.0]], "submitted_at": 1700000000.5}
    assert RequestItem.from_wire(wire) == item
    with pytest.raises(MessageError, match="must be an object with id, rows and submitted_at"):
        RequestItem.from_wire(["t-1", [[1.0, 2.0]], 1700000000.5])
    with pytest.raises(MessageError, match="has no 'rows'"):
        RequestItem.from_wire({"id": "t-1", "submitted_at": 1.0})


def test_a_task_result_round_trips_through_its_result_document() -> None:
    result = TaskResult(
        outcomes=[Outcome(predictions=["setosa"], probabilities=[[0.9, 0.1]],
                          timings_ms={"queued": 1.0, "run": 2.0, "total": 3.0}),
                  Outcome(error="ValueError: bad"), Outcome(revoked=True)],
        worker="cpu@h", device="cpu", version="2", batch_size=3, rows=1,
    )
    doc = ResultDoc.decode(ResultDoc.success("b-1", result).encode())
    assert doc is not None and doc.ready and doc.status == "SUCCESS" and doc.task_id == "b-1"
    # One date format for every document Turnout writes (Celery's own).
    assert doc.date_done is not None and doc.date_done.endswith(".000000+00:00")
    back = doc.task_result()
    assert back == result
    assert back.outcome(7).error == "no result for it"
    assert ResultDoc.decode(ResultDoc.revoked("b-2").encode()).date_done.endswith("+00:00")  # type: ignore[union-attr]
    assert ResultDoc.decode(None) is None


def test_failures_read_in_words() -> None:
    hard = ResultDoc("t", "FAILURE", {"exc_type": "TimeLimitExceeded", "exc_message": [2.0]})
    assert hard.error_text().startswith("TaskTimeout: the job ran past its hard time limit of 2.0 s")
    assert ResultDoc("t", "FAILURE", {"exc_type": "KeyError", "exc_message": ["x"]}).error_text() \
        == "KeyError: x"


def test_every_heartbeat_field_is_on_the_wire_null_where_it_does_not_apply() -> None:
    cpu = Heartbeat(name="cpu@h", incarnation="cpu@h#1", kind="cpu", queues=("cpu",),
                    device="cpu", concurrency=2, host="h", pid=10, started_at=1.0,
                    models=("iris",), versions={"iris": {"1": VersionState("ready")}})
    wire = orjson.loads(cpu.encode())
    for field in ("gpu", "gpu_index", "memory_limit_mb", "telemetry", "cuda_visible_devices"):
        assert field in wire and wire[field] is None
    assert Heartbeat.decode(cpu.encode()) == cpu
    gpu = Heartbeat.from_wire({**wire, "name": "gpu0@h", "gpu_index": 0,
                               "gpu": {"uuid": "GPU-1", "memory_free_mb": 10.0}})
    assert gpu.device_queue == "gpu.0" and gpu.gpu == GpuFigures(uuid="GPU-1", memory_free_mb=10.0)
    with pytest.raises(MessageError, match="has no 'name'"):
        Heartbeat.from_wire({"kind": "cpu"})


def test_serves_is_one_rule_for_models_and_versions() -> None:
    beat = Heartbeat.from_wire({"name": "w", "models": ["iris"], "versions": {"iris": {
        "1": {"state": "ready"}, "2": {"state": "loading"}}, "cnn": {"1": {"state": "ready"}}}})
    assert beat.serves("iris") and beat.serves("iris", "1")
    assert not beat.serves("iris", "2")  # still loading
    assert not beat.serves("cnn")  # not held: its version states alone do not make it served


def test_one_waiter_reads_its_own_outcome_and_where_it_ran() -> None:
    result = TaskResult(outcomes=[Outcome(predictions=[1]), Outcome(predictions=[2])],
                        worker="w", device="cpu", version="3", batch_size=2, rows=2)
    doc = ResultDoc.decode(ResultDoc.success("b", result).encode())
    assert doc is not None
    entry, ran = doc.outcome(1)
    assert entry.predictions == [2] and ran.worker == "w" and ran.version == "3"
    assert ran.batch_size == 2 and ran.outcomes == []
    assert doc.outcome(5)[0].error == "no result for it"
