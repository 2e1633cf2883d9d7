"""The ownership rules of turnout.core.delivery, on a real Redis: who may ack, who
may write a result, how a dead worker's deliveries come back, and races
between acks, give-backs and reapers."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest
import redis

from turnout.core import delivery, redis_keys
from turnout.stack.redis_server import free_port


def _message(task_id: str, queue: str = "gpu") -> tuple[str, str]:
    tag = str(uuid.uuid4())
    raw = {
        "body": "e30=",
        "headers": {"id": task_id, "task": "turnout.predict"},
        "properties": {"delivery_tag": tag, "delivery_info": {"exchange": "", "routing_key": queue}},
    }
    return tag, json.dumps([raw, "", queue])


def _take(scripts: delivery.Scripts, incarnation: str, task_id: str | None = None) -> tuple[str, str]:
    task_id = task_id or str(uuid.uuid4())
    tag, payload = _message(task_id)
    assert delivery.append(scripts, incarnation, tag, payload, task_id)
    return tag, task_id


def _queued(client: redis.Redis, queue: str = "gpu") -> list[dict]:
    return [json.loads(m) for m in client.lrange(queue, 0, -1)]


def test_only_the_owner_may_ack(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    delivery.register(redis_client, "b#1")
    tag, task_id = _take(scripts, "a#1")

    assert delivery.ack(scripts, "b#1", tag) == 0  # refused
    assert redis_client.hexists("unacked", tag)
    assert delivery.ack(scripts, "a#1", tag) == 1
    assert not redis_client.hexists("unacked", tag)
    assert not redis_client.zscore("unacked_index", tag)
    assert not redis_client.hexists(delivery.OWNERS, tag)
    assert not redis_client.hexists(delivery.LEASES, task_id)
    assert redis_client.scard(delivery.held("a#1")) == 0
    assert delivery.stats(redis_client)["ack_refused"] == 1


def test_a_reaped_incarnation_takes_nothing_and_cannot_beat(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    tag, _ = _take(scripts, "a#1")
    assert delivery.beat(scripts, "a#1") == 1

    assert delivery.give_back(redis_client, "a#1") == 1

    assert delivery.beat(scripts, "a#1") == -1
    late_tag, payload = _message("late")
    assert not delivery.append(scripts, "a#1", late_tag, payload, "late")
    assert not redis_client.hexists("unacked", late_tag)
    # Its old delivery's ack is refused: the message is someone else's now.
    assert delivery.ack(scripts, "a#1", tag) == 2
    assert len(_queued(redis_client)) == 1


def test_a_given_back_message_is_a_new_delivery_at_the_head(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    tag, task_id = _take(scripts, "a#1")
    redis_client.lpush("gpu", json.dumps({"waiting": True}))  # an older job, still queued

    assert delivery.give_back(redis_client, "a#1") == 1

    # kombu pops from the right: the head of the queue is the last element.
    head = json.loads(redis_client.lindex("gpu", -1))
    assert head["headers"]["id"] == task_id
    assert head["headers"]["redelivered"] is True
    assert head["properties"]["delivery_info"]["redelivered"] is True
    assert head["properties"]["delivery_tag"] != tag  # tells the two deliveries apart
    assert redis_client.hlen("unacked") == 0 and redis_client.hlen(delivery.LEASES) == 0
    assert not redis_client.hexists(delivery.INCARNATIONS, "a#1")
    assert delivery.stats(redis_client)["given_back_reaped"] == 1


def test_a_result_is_written_only_under_the_lease_and_only_once(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    delivery.register(redis_client, "b#1")
    _, task_id = _take(scripts, "a#1")

    def store(incarnation: str, value: str) -> int:
        return int(scripts.store(
            keys=[delivery.LEASES, delivery.done(task_id), redis_keys.result(task_id), delivery.STATS,
                  delivery.LEDGER],
            args=[incarnation, task_id, value, 60, ""],
        ))

    assert store("b#1", "from b") == 0  # b holds no lease on it
    assert redis_client.get(redis_keys.result(task_id)) is None
    assert store("a#1", "from a") == 1
    assert store("a#1", "again") == -1  # the first result wins
    assert store("", "from the router") == -1
    assert redis_client.get(redis_keys.result(task_id)) == b"from a"
    counters = delivery.stats(redis_client)
    assert counters["fenced_results"] == 1 and counters["duplicate_results"] == 2


def test_ack_racing_give_back_each_message_ends_exactly_once(redis_client: redis.Redis) -> None:
    """An ack and a give-back of the same deliveries at the same time: each
    message is either acked or back in its queue, never both, never neither."""
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    taken = [_take(scripts, "a#1") for _ in range(300)]
    acked: list[str] = []

    def acker() -> None:
        client = redis.Redis(connection_pool=redis_client.connection_pool)
        own = delivery.Scripts(client)
        for tag, task_id in taken:
            if delivery.ack(own, "a#1", tag) == 1:
                acked.append(task_id)

    threads = [threading.Thread(target=acker),
               threading.Thread(target=lambda: delivery.give_back(redis.Redis(connection_pool=redis_client.connection_pool), "a#1"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    queued = [m["headers"]["id"] for m in _queued(redis_client)]
    assert len(queued) + len(acked) == len(taken)
    assert Counter(queued + acked) == Counter(task_id for _, task_id in taken)
    assert redis_client.hlen("unacked") == 0


def test_two_reapers_racing_give_each_message_back_once(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    taken = [_take(scripts, "a#1") for _ in range(300)]
    moved: list[int] = []
    barrier = threading.Barrier(4)

    def reaper() -> None:
        client = redis.Redis(connection_pool=redis_client.connection_pool)
        barrier.wait()
        moved.append(delivery.give_back(client, "a#1"))

    threads = [threading.Thread(target=reaper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert max(moved) == 300 and sum(moved) == 300
    queued = [m["headers"]["id"] for m in _queued(redis_client)]
    assert Counter(queued) == Counter(task_id for _, task_id in taken)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_reaper_judges_silence_by_its_own_clock(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    for name in ("alive#1", "silent#1"):
        delivery.register(redis_client, name)
        _take(scripts, name)

    assert reaper.tick() == []  # first sight: nothing is judged yet
    reaped_at = {}
    for _ in range(8):
        clock.now += 1
        delivery.beat(scripts, "alive#1")
        for name, moved in reaper.tick():
            reaped_at[name] = (clock.now - 100, moved)
    assert reaped_at == {"silent#1": (5, 1)}  # at 5 s of silence, not before, and once
    assert redis_client.hexists(delivery.INCARNATIONS, "alive#1")
    assert not redis_client.hexists(delivery.INCARNATIONS, "silent#1")


def test_a_reaper_that_lost_redis_starts_its_observations_over(redis_client: redis.Redis) -> None:
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    for _ in range(4):
        reaper.tick()
        clock.now += 1
    reaper.client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        reaper.tick()
    reaper.client = redis_client
    reaped_at = {}
    for step in range(1, 8):
        clock.now += 1  # 5 s of silence since the first look, but the watch broke at 4
        for name, _ in reaper.tick():
            reaped_at[name] = step
    assert reaped_at == {"w#1": 6}  # 5 s after it could look again


def test_a_reaper_whose_give_back_the_broker_refused_starts_over(redis_client: redis.Redis) -> None:
    """A broker that refuses writes stops every beat: once it writes again,
    that silence is not counted against the workers."""
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    for _ in range(5):
        reaper.tick()
        clock.now += 1
    # Redis's own refusal of every write (as when its disk is full).
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            reaper.tick()  # 5 s of silence: the give-back is refused
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    reaped_at = {}
    for step in range(1, 8):
        clock.now += 1
        for name, _ in reaper.tick():
            reaped_at[name] = step
    assert reaped_at == {"w#1": 6}  # a whole new watch
    assert delivery.beat(delivery.Scripts(redis_client), "w#1") < 0


def test_claim_pops_and_owns_in_one_step(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    _, payload = _message("t1", queue="gpu.0")
    raw = json.loads(payload)[0]
    redis_client.lpush("gpu.0", json.dumps(raw))
    redis_client.lpush(delivery.bell("gpu.0"), 1)

    assert delivery.claim(scripts, "a#1", ["gpu", "gpu.0"]) == ("gpu.0", json.dumps(raw))

    tag = raw["properties"]["delivery_tag"]
    assert redis_client.llen("gpu.0") == 0
    assert redis_client.llen(delivery.bell("gpu.0")) == 0  # one bell per message taken
    assert json.loads(redis_client.hget("unacked", tag)) == [raw, "", "gpu.0"]
    assert redis_client.hget(delivery.OWNERS, tag) == b"a#1\tt1"
    assert redis_client.hget(delivery.LEASES, "t1") == f"a#1\t{tag}".encode()
    assert redis_client.sismember(delivery.held("a#1"), tag)
    assert delivery.claim(scripts, "a#1", ["gpu", "gpu.0"]) == 0  # nothing left


def test_a_reaped_incarnation_claims_nothing(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    delivery.give_back(redis_client, "a#1")  # declared dead
    redis_client.lpush("gpu", json.dumps(json.loads(_message("t1")[1])[0]))

    assert delivery.claim(scripts, "a#1", ["gpu"]) == -1
    assert redis_client.llen("gpu") == 1  # still there for a live worker


def test_a_given_back_message_rings_its_queues_bell(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    delivery.register(redis_client, "b#1")
    _, task_id = _take(scripts, "a#1")
    delivery.give_back(redis_client, "a#1")

    assert redis_client.llen(delivery.bell("gpu")) == 1
    got = delivery.claim(scripts, "b#1", ["gpu"], bell_index=1)
    assert isinstance(got, tuple) and json.loads(got[1])["headers"]["id"] == task_id
    assert redis_client.hget(delivery.LEASES, task_id).startswith(b"b#1\t")


def test_a_reaper_that_did_not_look_for_a_while_starts_over(redis_client: redis.Redis) -> None:
    """A reaper frozen for longer than workers may be silent must not wake up
    and declare every one of them dead."""
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    reaper.tick()
    clock.now += 30  # this process was frozen; w#1 beat all along, unseen
    reaped_at = {}
    for step in range(8):
        for name, _ in reaper.tick():
            reaped_at[name] = step
        clock.now += 1
    assert reaped_at == {"w#1": 5}  # after 5 s of watched silence, not at once


def _push(client: redis.Redis, queue: str, lane: str, task_id: str) -> None:
    _, payload = _message(task_id, queue=queue)
    client.lpush(redis_keys.lane_key(queue, lane), json.dumps(json.loads(payload)[0]))
    client.lpush(delivery.bell(queue), 1)


def _claimed(scripts: delivery.Scripts, incarnation: str, queues: list[str],
             share: int = 10) -> tuple[str, str] | None:
    got = delivery.claim(scripts, incarnation, queues, share=share)
    if not isinstance(got, tuple):
        return None
    return got[0], json.loads(got[1])["headers"]["id"]


def test_claims_take_the_highest_lane_first_and_fifo_within_a_lane(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    for i in range(3):
        _push(redis_client, "cpu", "low", f"low{i}")
        _push(redis_client, "cpu", "normal", f"normal{i}")
    _push(redis_client, "cpu", "high", "high0")
    got = [_claimed(scripts, "a#1", ["cpu"], share=0) for _ in range(8)]
    assert got == [("cpu@high", "high0"), ("cpu", "normal0"), ("cpu", "normal1"),
                   ("cpu", "normal2"), ("cpu@low", "low0"), ("cpu@low", "low1"),
                   ("cpu@low", "low2"), None]
    # Each lane's bell is its queue's: one token per message, all taken.
    assert redis_client.llen(delivery.bell("cpu")) == 0
    # The unacked entry names the lane's list, so a message given back keeps its lane.
    tags = [t.decode() for t in redis_client.smembers(delivery.held("a#1"))]
    delivery.give_back(redis_client, "a#1", tags, forget=False)
    assert redis_client.llen("cpu@low") == 3 and redis_client.llen("cpu@high") == 1
    assert redis_client.llen("cpu") == 3 and redis_client.llen(delivery.bell("cpu")) == 7


def test_the_lowest_waiting_lane_gets_every_nth_claim(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    for i in range(30):
        _push(redis_client, "gpu", "normal", f"n{i}")
    for i in range(5):
        _push(redis_client, "gpu", "low", f"l{i}")
    lanes = [redis_keys.lane_of(_claimed(scripts, "a#1", ["gpu"], share=10)[0]) for _ in range(30)]
    # Under steady interactive load, the batch lane still gets one claim in ten.
    assert lanes.count("low") == 3
    assert [i for i, lane in enumerate(lanes) if lane == "low"] == [9, 19, 29]


def _push_joinable(client: redis.Redis, queue: str, lane: str, task_id: str, join: str | None) -> str:
    tag, payload = _message(task_id, queue=queue)
    raw = json.loads(payload)[0]
    if join is not None:
        raw["headers"][delivery.JOIN_HEADER] = join
    # As the router writes it: compact JSON (the join script finds the header by text).
    client.lpush(redis_keys.lane_key(queue, lane), json.dumps(raw, separators=(",", ":")))
    client.lpush(delivery.bell(queue), 1)
    return tag


def _join(scripts: delivery.Scripts, leader: str, key: str, lanes: list[str], room: int) -> list[str]:
    (got,) = scripts.pipelined([delivery.join_call(scripts, "a#1", leader, key, lanes, room, 64)])
    return [json.loads(m)["headers"]["id"] for m in got]


def test_a_join_takes_matching_tasks_oldest_first_up_to_the_room_and_owns_them(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    _push_joinable(redis_client, "cpu", "normal", "leader", "iris|1|0|1")
    assert _claimed(scripts, "a#1", ["cpu"]) == ("cpu", "leader")
    leader_tag = redis_client.hget(delivery.LEASES, "leader").decode().split("\t")[1]
    _push_joinable(redis_client, "cpu", "normal", "t1", "iris|1|0|2")
    _push_joinable(redis_client, "cpu", "normal", "other-version", "iris|2|0|1")
    _push_joinable(redis_client, "cpu", "normal", "pinned", "iris|1|1|1")
    _push_joinable(redis_client, "cpu", "normal", "no-header", None)
    _push_joinable(redis_client, "cpu", "normal", "too-big", "iris|1|0|9")
    _push_joinable(redis_client, "cpu", "high", "t2", "iris|1|0|1")
    _push_joinable(redis_client, "cpu", "normal", "t3", "iris|1|0|1")
    _push_joinable(redis_client, "cpu", "normal", "t4", "iris|1|0|1")
    _push_joinable(redis_client, "cpu", "low", "low", "iris|1|0|1")

    # From the leader's lane and the ones above, best lane first, oldest first
    # within a lane; never more rows than the room; the low lane untouched.
    taken = _join(scripts, "leader", "iris|1|0", ["cpu@high", "cpu"], room=4)
    assert taken == ["t2", "t1", "t3"]
    for task in taken:
        tag = redis_client.hget(delivery.LEASES, task).decode().split("\t")[1]
        assert redis_client.hget(delivery.OWNERS, tag).decode() == f"a#1\t{task}"
        assert redis_client.sismember(delivery.held("a#1"), tag)
        assert redis_client.hget(delivery.joined("a#1"), tag).decode() == leader_tag
    left = [json.loads(m)["headers"]["id"] for m in redis_client.lrange("cpu", 0, -1)]
    assert left == ["t4", "too-big", "no-header", "pinned", "other-version"]
    assert redis_client.llen("cpu@low") == 1
    # One bell per message still queued.
    assert redis_client.llen(delivery.bell("cpu")) == 6

    # Acked, a rider loses its joined mark; given back, it loses its join
    # header too (so it runs alone next time).
    t2 = redis_client.hget(delivery.LEASES, "t2").decode().split("\t")[1]
    scripts.pipelined([delivery.ack_joined_call(scripts, "a#1", t2)])
    assert not redis_client.hexists(delivery.joined("a#1"), t2)
    t1 = redis_client.hget(delivery.LEASES, "t1").decode().split("\t")[1]
    delivery.give_back(redis_client, "a#1", [t1], forget=False)
    back = json.loads(redis_client.lrange("cpu", -1, -1)[0])
    assert back["headers"]["id"] == "t1" and delivery.JOIN_HEADER not in back["headers"]
    assert not redis_client.hexists(delivery.joined("a#1"), t1)


def test_a_join_takes_nothing_for_a_leader_it_does_not_hold(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    _push_joinable(redis_client, "cpu", "normal", "t1", "iris|1|0|1")
    assert _join(scripts, "someone-elses", "iris|1|0", ["cpu"], room=4) == []
    delivery.give_back(redis_client, "a#1")  # reaped
    assert _join(scripts, "t1", "iris|1|0", ["cpu"], room=4) == []
    assert redis_client.llen("cpu") == 1


def test_pipelined_scripts_survive_redis_losing_them(redis_client: redis.Redis) -> None:
    scripts = delivery.Scripts(redis_client)
    delivery.register(redis_client, "a#1")
    tag, _ = _take(scripts, "a#1")
    redis_client.script_flush()  # as after a restart
    assert scripts.pipelined([(scripts.ack, [delivery.OWNERS, delivery.UNACKED_INDEX, delivery.UNACKED,
                                             delivery.held("a#1"), delivery.LEASES, delivery.STATS],
                               ["a#1", tag])]) == [1]


def test_a_reaper_counts_no_silence_across_a_refusal_that_just_ended(
        redis_client: redis.Redis) -> None:
    """The beats stop while the broker refuses writes; when it writes again a
    reaper may look before the next beat lands. Redis's count of refused
    writes moved during the silence, so the watch starts over."""
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    for _ in range(3):
        reaper.tick()
        clock.now += 1
    redis_client.config_set("min-replicas-to-write", 1)
    try:
        with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
            redis_client.set("submitted", 1)  # a write refused, as a submit's would be
    finally:
        redis_client.config_set("min-replicas-to-write", 0)
    reaped_at = {}
    for step in range(1, 10):
        clock.now += 1
        for name, _ in reaper.tick():
            reaped_at[name] = step
    # Silent for 5 s at step 2, where it would have been declared dead; the
    # refusal moved the count, so a new watch from the next look (step 3),
    # and dead 5 s later: one grace, not more.
    assert reaped_at == {"w#1": 8}


def test_refusals_that_never_stop_delay_a_death_by_one_grace_only(
        redis_client: redis.Redis) -> None:
    """A dead worker must still be declared dead while writes keep being
    refused now and then: one grace per silence, then the reaper acts."""
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    reaped_at = {}
    for step in range(1, 16):
        redis_client.config_set("min-replicas-to-write", 1)
        try:
            with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
                redis_client.set("submitted", 1)
        finally:
            redis_client.config_set("min-replicas-to-write", 0)
        for name, _ in reaper.tick():
            reaped_at[name] = step
        clock.now += 1
    assert reaped_at == {"w#1": 12}  # silent 5 s at step 6: graced; 5 s after step 7


def test_other_errors_give_no_grace(redis_client: redis.Redis) -> None:
    """Errors that are not refusals (a client's unknown command, redis-py's
    CLIENT SETINFO on an older Redis) happen all the time: they must not
    delay a death."""
    clock = _Clock()
    reaper = delivery.Reaper(redis_client, dead_after_s=5, clock=clock)
    delivery.register(redis_client, "w#1")
    reaped_at = {}
    for step in range(1, 10):
        with pytest.raises(redis.ResponseError):
            redis_client.execute_command("NOSUCHCOMMAND")
        for name, _ in reaper.tick():
            reaped_at[name] = step
        clock.now += 1
    assert reaped_at == {"w#1": 6}
