"""The fault scenarios. Each runs load against the stack, injects its fault,
waits for every accepted job to end, and returns one row of counts:
submitted, accepted, refused, completed, lost, runs beyond one, results
beyond one, and the time from the fault to the last job done."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

from turnout.benchmarks.chaos.load import Ledger, Load, settle, submit
from turnout.benchmarks.chaos.stack import CPU_WORKER, GPU_WORKERS, ChaosStack
from turnout.benchmarks.chaos.tally import Options, check, drain, one, post, tally
from turnout.benchmarks.scenarios import DIGITS_ROW, IRIS_ROW
from turnout.core import redis_keys

IRIS = {"inputs": [IRIS_ROW]}
DIGITS = {"inputs": [DIGITS_ROW]}


# -- the scenarios ------------------------------------------------------------------------


def _batch_job(stack: ChaosStack, model: str, row: list[float], chunks: int,
               chunk_rows: int) -> tuple[str, list[str]]:
    """Submit a batch job of ``chunks`` chunks: its id and its chunks' task ids."""
    status, reply = post(stack, f"/v1/models/{model}/batch",
                         {"inputs": [row] * (chunks * chunk_rows), "chunk_rows": chunk_rows})
    assert status == 202, reply
    record = json.loads(stack.client.get(redis_keys.batch(reply["batch_id"])) or b"{}")
    return str(reply["batch_id"]), [c[0] for c in record["chunks"]]


def gpu_kill_during_batch(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """1. A whole GPU worker SIGKILLed mid-job, several times in a row, during
    a batch job; each killed chunk's time from the kill to its result."""
    drain(stack)
    kills = o.pick(2, 5)
    chunks = o.pick(40, 110)
    _, chunk_ids = _batch_job(stack, "slow-digits", DIGITS_ROW, chunks, 16)
    killed: list[tuple[float, str]] = []
    first_fault = None
    for _ in range(kills):
        time.sleep(1.0)
        victim = stack.busy_gpu_worker()
        incarnation = stack.incarnation(victim)
        at = stack.kill(victim)
        first_fault = first_fault or at
        # What it was running: its runs in the ledger that have no result yet.
        ledger = Ledger.read(stack.client)
        killed += [
            (at, task) for task, entries in ledger.by_task.items()
            if any(e["event"] == "start" and e["incarnation"] == incarnation for e in entries)
            and not any(e["event"] == "result" for e in entries)
        ]
        # One worker dies at a time: the next kill waits until this one's new
        # incarnation is up (its old heartbeat outlives it by a few seconds),
        # so that each figure is the cost of one death.
        deadline = time.monotonic() + 120
        while stack.incarnation(victim) in (None, incarnation):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{victim} did not come back")
            time.sleep(0.1)
    load = Load()
    row = tally(stack, f"1 gpu worker SIGKILL x{kills} in a batch", load, first_fault,
                extra_ids=chunk_ids)
    ledger = Ledger.read(stack.client)
    backs = []
    for at, task in killed:
        done = [e["t"] for e in ledger.by_task.get(task, [])
                if e["event"] == "result" and e.get("stored") == 1]
        backs.append(round(min(done) - at, 2) if done else None)
    row["kill_to_result_s"] = backs
    row["max_kill_to_result_s"] = max((b for b in backs if b is not None), default=None)
    check(row, all(b is not None for b in backs),
          f"{sum(b is None for b in backs)} killed chunk(s) never got a result")
    slowest = max((b for b in backs if b is not None), default=0.0)
    check(row, slowest <= 10, f"kill -> result took {slowest} s, over its 10 s bound (each: {backs})")
    return row


def cpu_kill_under_load(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """2. The CPU worker SIGKILLed under a steady rate of iris."""
    drain(stack)
    rate, duration = o.pick(100, 300), o.pick(8.0, 20.0)
    load = Load()
    fault: list[float] = []

    async def go() -> None:
        async def fault_later() -> None:
            await asyncio.sleep(duration / 3)
            fault.append(stack.kill(CPU_WORKER))

        await asyncio.gather(submit(stack.url, "iris", IRIS, rate, duration, load), fault_later())

    asyncio.run(go())
    return tally(stack, f"2 cpu worker SIGKILL at {rate} req/s", load, fault[0])


def gpu_frozen(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """3. A GPU worker frozen (SIGSTOP, parent and child) mid-job, then woken."""
    drain(stack)
    frozen_s = o.pick(8.0, 30.0)
    load = Load()
    victim: list[str] = []
    fault: list[float] = []

    async def go() -> None:
        async def freeze() -> None:
            await asyncio.sleep(1.0)
            name = await asyncio.to_thread(stack.busy_gpu_worker)
            stack.held.add(name)  # a stopped process is not dead: no restart
            victim.append(name)
            fault.append(stack.kill(name, signal.SIGSTOP))
            await asyncio.sleep(frozen_s)
            stack.kill(name, signal.SIGCONT)
            stack.held.discard(name)

        await asyncio.gather(
            submit(stack.url, "slow-digits", DIGITS, 2.0, frozen_s + 4, load), freeze())

    asyncio.run(go())
    row = tally(stack, f"3 gpu worker SIGSTOP {frozen_s:.0f} s", load, fault[0])
    row["frozen_worker"] = victim[0]
    return row


def long_job(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """4. Jobs longer than the visibility timeout (set to 2 s for the suite)."""
    drain(stack)
    load = Load()
    for _ in range(o.pick(2, 4)):
        one(stack, "long-digits", DIGITS, load)
    row = tally(stack, "4 5 s jobs, visibility timeout 2 s", load, None)
    check(row, row["runs_beyond_one"] == 0,
          f"{row['runs_beyond_one']} run(s) beyond one: a live worker's long job was taken from it")
    return row


def redis_kill(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """5. Redis kill -9 under load; restarted from its AOF by the supervisor."""
    drain(stack)
    rate, duration = o.pick(150, 500), o.pick(8.0, 15.0)
    pids = {name: stack.pid(name) for name in stack.parts}
    load = Load()
    fault: list[float] = []

    async def go() -> None:
        async def fault_later() -> None:
            await asyncio.sleep(duration / 3)
            fault.append(stack.kill_redis())

        await asyncio.gather(submit(stack.url, "iris", IRIS, rate, duration, load), fault_later())

    asyncio.run(go())
    row = tally(stack, f"5 redis kill -9 at {rate} req/s", load, fault[0], timeout_s=120)
    views = {s.task_id: s for s in load.accepted}
    ids_before = [i for i, s in views.items() if s.t < fault[0] - 1]
    done, _ = settle(stack.url, [i for i in ids_before if i], 5)
    row["lost_accepted_1s_before"] = sum(
        1 for v in done.values() if v.get("status") not in {"SUCCESS", "FAILURE", "REVOKED"})
    row["parts_restarted"] = sorted(n for n, pid in pids.items() if stack.pid(n) != pid)
    check(row, row["lost_accepted_1s_before"] == 0,
          f"{row['lost_accepted_1s_before']} job(s) accepted over 1 s before the kill lost")
    check(row, not row["parts_restarted"], f"restarted: {', '.join(row['parts_restarted'])}")
    return row


def redis_down(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """6. Redis stopped for a while: submits refused at once with 503,
    workers stay up and serve again once it is back."""
    drain(stack)
    down_s = o.pick(8.0, 30.0)
    pids = {name: stack.pid(name) for name in stack.parts}
    load = Load()
    fault: list[float] = []
    back: list[float] = []

    async def go() -> None:
        async def outage() -> None:
            await asyncio.sleep(2)
            fault.append(await asyncio.to_thread(stack.stop_redis))
            await asyncio.sleep(down_s)
            back.append(await asyncio.to_thread(stack.start_redis))

        await asyncio.gather(submit(stack.url, "iris", IRIS, 50, down_s + 8, load), outage())

    asyncio.run(go())
    # Sent while Redis was surely down: after the stop, before the restart began.
    during = [s for s in load.sent if fault[0] + 0.5 < s.t < fault[0] + down_s]
    row = tally(stack, f"6 redis down {down_s:.0f} s", load, back[0])
    row["during_outage"] = dict(Counter(str(s.status) for s in during))
    row["refused_during_outage"] = len([s for s in during if s.status == 503])
    row["max_refusal_s"] = round(max((s.latency_s for s in during if s.status == 503), default=0), 3)
    row["parts_restarted"] = sorted(n for n, pid in pids.items() if stack.pid(n) != pid)
    # None hangs: each worker serves again (a fresh job on every queue).
    after = Load()
    ids = [one(stack, "iris", IRIS, after), one(stack, "digits-cnn", DIGITS, after)]
    views, _ = settle(stack.url, ids, 60)
    row["served_after"] = all(v.get("status") == "SUCCESS" for v in views.values())
    check(row, row["served_after"], "a queue did not serve again after the outage")
    check(row, not row["parts_restarted"], f"restarted: {', '.join(row['parts_restarted'])}")
    check(row, row["max_refusal_s"] < 1.0,
          f"the slowest 503 took {row['max_refusal_s']} s (bound 1 s)")
    check(row, len(during) == row["refused_during_outage"],
          f"{len(during) - row['refused_during_outage']} of {len(during)} submits during the "
          f"outage were not refused with 503 ({row['during_outage']})")
    return row


def hang(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """7. A job that hangs past its hard time limit."""
    drain(stack)
    load = Load()
    hung = one(stack, "hang-digits", DIGITS, load)
    views, _ = settle(stack.url, [hung], 60)
    one(stack, "digits-cnn", DIGITS, load)  # the next job, on a replaced child

    def expect(task_id: str, view: dict[str, Any]) -> bool:
        if task_id == hung:
            return view.get("status") == "FAILURE" and "TaskTimeout" in view.get("error", "")
        return view.get("status") == "SUCCESS"

    row = tally(stack, "7 hang past the hard time limit", load, None, expect=expect)
    row["hung_error"] = views[hung].get("error")
    return row


def poison(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """8. A job that kills its worker's process every time, among others."""
    drain(stack)
    load = Load()
    bad = [666.0] + DIGITS_ROW[1:]
    poisoned: list[str] = []

    async def go() -> None:
        async def poison_once() -> None:
            await asyncio.sleep(0.5)
            poisoned.append(await asyncio.to_thread(
                one, stack, "poison-digits", {"inputs": [bad]}, load))

        await asyncio.gather(submit(stack.url, "iris", IRIS, 50, o.pick(8.0, 15.0), load),
                             submit(stack.url, "digits-cnn", DIGITS, 10, o.pick(8.0, 15.0), load),
                             poison_once())

    asyncio.run(go())

    def expect(task_id: str, view: dict[str, Any]) -> bool:
        if task_id in poisoned:
            return view.get("status") == "FAILURE" and "TooManyDeliveries" in view.get("error", "")
        return view.get("status") == "SUCCESS"

    row = tally(stack, "8 poison job kills its worker", load, None, expect=expect)
    row["poison_runs"] = Ledger.read(stack.client).runs[poisoned[0]]
    return row


def revoke_then_restart(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """9. A queued job revoked, then every GPU worker restarted: it never runs."""
    drain(stack)
    load = Load()
    for _ in GPU_WORKERS:  # keep both GPU workers busy
        one(stack, "long-digits", DIGITS, load)
    time.sleep(1)
    queued = one(stack, "digits-cnn", DIGITS, load)
    request = urllib.request.Request(f"{stack.url}/v1/tasks/{queued}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    for name in GPU_WORKERS:
        stack.kill(name, signal.SIGTERM, group=False)  # a restart: warm shutdown

    def expect(task_id: str, view: dict[str, Any]) -> bool:
        return view.get("status") == ("REVOKED" if task_id == queued else "SUCCESS")

    row = tally(stack, "9 revoke, then restart the workers", load, None, expect=expect)
    row["revoked_runs"] = Ledger.read(stack.client).runs[queued]
    check(row, row["revoked_runs"] == 0, f"the revoked job ran {row['revoked_runs']} time(s)")
    return row


def soak(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """10. Many mixed jobs with random kills of any worker."""
    drain(stack)
    total = o.pick(1500, 10_000)
    rate = 150.0
    duration = total / rate
    load = Load()
    faults: list[float] = []
    rng = random.Random(7)

    async def go() -> None:
        async def killer() -> None:
            start = time.monotonic()
            while time.monotonic() - start < duration - 4:
                await asyncio.sleep(rng.uniform(3, 6))
                name = rng.choice([CPU_WORKER, *GPU_WORKERS])
                faults.append(stack.kill(name))

        await asyncio.gather(
            submit(stack.url, "iris", IRIS, rate * 0.8, duration, load),
            submit(stack.url, "digits-cnn", DIGITS, rate * 0.2, duration, load),
            killer(),
        )

    asyncio.run(go())
    row = tally(stack, f"10 soak: {total} mixed jobs, random kills", load,
                faults[-1] if faults else None, timeout_s=240)
    row["kills"] = len(faults)
    return row


def lanes_under_kills(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """11. A batch job waiting in the low lane while interactive iris runs in
    the normal lane, the CPU worker SIGKILLed twice: given-back chunks keep
    their lane, and every chunk and request ends with one result."""
    drain(stack)
    chunks = o.pick(1500, 5000)
    rate, duration = o.pick(100, 200), o.pick(9.0, 21.0)
    batch_id, chunk_ids = _batch_job(stack, "iris", IRIS_ROW, chunks, 20)
    load = Load()
    faults: list[float] = []
    low_after_kill: list[int] = []

    async def go() -> None:
        async def kills() -> None:
            # Early, while chunks still wait in the low lane, then mid-run.
            for wait in (1.5, duration / 2 - 1.5):
                await asyncio.sleep(wait)
                faults.append(stack.kill(CPU_WORKER))
                low_after_kill.append(int(stack.client.llen(redis_keys.lane_key("cpu", "low"))))

        await asyncio.gather(submit(stack.url, "iris", IRIS, rate, duration, load), kills())

    asyncio.run(go())
    row = tally(stack, f"11 lanes: batch (low) + {rate} req/s, cpu kills", load, faults[0],
                extra_ids=chunk_ids, timeout_s=180)
    with urllib.request.urlopen(f"{stack.url}/v1/batches/{batch_id}", timeout=10) as r:
        view = json.loads(r.read())
    row["batch_rows_done"] = view["rows_done"]
    row["low_lane_after_kills"] = low_after_kill
    check(row, view["status"] == "SUCCESS" and view["rows_done"] == chunks * 20,
          f"the batch job ended {view['status']} with {view['rows_done']} of {chunks * 20} rows")
    return row


def _capacity(stack: ChaosStack, model: str, tasks: int) -> float:
    """Tasks a second the GPU workers finish of ``model`` while saturated,
    measured: ``tasks`` queued at once, from the first start to the last result."""
    load = Load()
    asyncio.run(submit(stack.url, model, DIGITS, 1000.0, tasks / 1000.0, load))
    ids = [s.task_id for s in load.accepted if s.task_id]
    settle(stack.url, ids, 60)
    ledger = Ledger.read(stack.client)
    starts = [e["t"] for i in ids for e in ledger.by_task.get(i, []) if e["event"] == "start"]
    ends = [e["t"] for i in ids for e in ledger.by_task.get(i, []) if e["event"] == "result"]
    return (len(ids) - 1) / (max(ends) - min(starts)) if starts and ends else 0.0


async def _patient(url: str, model: str, body: dict[str, Any], requests: int, tries: int,
                   out: list[dict[str, Any]]) -> None:
    """A client that honours Retry-After: each request waits for its result,
    and on 429 (or a deadline missed) comes back when told, up to ``tries``."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for _ in range(requests):
            made, status, waited = 0, None, 0.0
            for _ in range(tries):
                made += 1
                r = await http.post(f"/v1/models/{model}/predict", json={**body, "wait": 10})
                if r.status_code == 200 and r.json().get("status") == "SUCCESS":
                    status = "SUCCESS"
                    break
                pause = float(r.headers.get("retry-after") or 0.5)
                waited += pause
                await asyncio.sleep(pause)
            out.append({"tries": made, "status": status, "waited_s": round(waited, 2)})


def deadlines_under_overload(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """12. Twice the GPU queue's measured capacity, every request with a
    500 ms deadline, and a few clients that honour Retry-After: none runs
    after its deadline (by the ledger), each ends once, with its result or
    DeadlineExceeded; the admitted ones finish within the deadline plus a
    task's run; goodput stays near capacity; the patient clients all succeed."""
    drain(stack)
    timeout, duration, run_s = 0.5, o.pick(8.0, 20.0), 0.2
    capacity = _capacity(stack, "quick-digits", 40)
    drain(stack)
    load = Load()
    body = {"inputs": [DIGITS_ROW], "timeout_s": timeout}
    patient: list[dict[str, Any]] = []

    async def go() -> None:
        await asyncio.gather(
            submit(stack.url, "quick-digits", body, 2 * capacity, duration, load),
            *(_patient(stack.url, "quick-digits", body, 3, 40, patient) for _ in range(4)))

    asyncio.run(go())

    def expect(_id: str, view: dict[str, Any]) -> bool:
        return view.get("status") == "SUCCESS" or str(view.get("error", "")).startswith(
            "DeadlineExceeded")

    row = tally(stack, f"12 deadlines {timeout * 1000:g} ms at 2x capacity", load, None,
                expect=expect, timeout_s=120)
    sent_at = {s.task_id: s.t for s in load.accepted if s.task_id}
    ledger = Ledger.read(stack.client)
    late = []
    for entries in ledger.by_task.values():
        for e in entries:
            if e["event"] != "start":
                continue
            for request in e.get("requests") or []:
                if request in sent_at and e["t"] > sent_at[request] + timeout + 0.05:
                    late.append(round(e["t"] - sent_at[request] - timeout, 3))
    views, _ = settle(stack.url, list(sent_at), 10)
    done = [v for v in views.values() if v.get("status") == "SUCCESS"]
    totals = sorted(float(v.get("timings_ms", {}).get("total", 0.0)) / 1000 for v in done)
    p99 = totals[min(len(totals) - 1, round(0.99 * (len(totals) - 1)))] if totals else None
    row["capacity_per_s"] = round(capacity, 2)
    row["ran_after_deadline"] = len(late)
    row["succeeded"] = len(done)
    row["expired"] = sum(1 for v in views.values() if str(v.get("error", "")).startswith("Deadline"))
    row["admitted_p99_s"] = round(p99, 3) if p99 is not None else None
    # A request sent at the end of the load may still start up to its
    # deadline later: the window in which the workers could serve them all.
    served = len(done) + sum(1 for p in patient if p["status"] == "SUCCESS")
    row["goodput_share_of_capacity"] = round(served / (capacity * (duration + timeout)), 3)
    row["patient_clients"] = {"requests": len(patient),
                              "succeeded": sum(1 for p in patient if p["status"] == "SUCCESS"),
                              "most_tries": max((p["tries"] for p in patient), default=0)}
    check(row, not late, f"{len(late)} request(s) started after their deadline (by {late[:5]} s)")
    check(row, row["goodput_share_of_capacity"] >= 0.9,
          f"goodput {row['goodput_share_of_capacity']:.0%} of capacity, under 90%")
    check(row, p99 is not None and p99 <= timeout + run_s + 0.1,
          f"admitted p99 {p99} s, over the deadline plus one run ({timeout + run_s:g} s)")
    check(row, all(p["status"] == "SUCCESS" for p in patient),
          f"{sum(p['status'] != 'SUCCESS' for p in patient)} patient request(s) never succeeded")
    return row


def kill_holding_riders(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """13. A batch job of small chunks on a batched route, so that each GPU
    pass takes queued chunks along (worker-side batching); a pool child
    SIGKILLed while its pass holds chunks taken along, then a whole GPU worker
    twice: every chunk ends with one result."""
    drain(stack)
    chunks = o.pick(240, 600)
    _, chunk_ids = _batch_job(stack, "batched-digits", DIGITS_ROW, chunks, 4)
    faults: list[float] = []
    held_at_kill: list[int] = []
    for whole in (False, True, True):
        found = stack.gpu_worker_with_riders()
        if found is None:
            held_at_kill.append(0)
            break
        victim, incarnation, riding = found
        held_at_kill.append(riding)
        if whole:
            faults.append(stack.kill(victim))
        else:
            faults.append(stack.kill_pool_child(victim))
        deadline = time.monotonic() + 120
        while whole and stack.incarnation(victim) in (None, incarnation):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{victim} did not come back")
            time.sleep(0.1)
    row = tally(stack, "13 gpu kills holding chunks taken along", Load(),
                faults[0] if faults else None,
                extra_ids=chunk_ids, timeout_s=240)
    ledger = Ledger.read(stack.client)
    row["taken_along_at_kills"] = held_at_kill
    row["passes_taking_along"] = sum(1 for entries in ledger.by_task.values()
                                     for e in entries if e.get("joined"))
    check(row, all(n > 0 for n in held_at_kill), f"a kill found no chunks taken along ({held_at_kill})")
    return row


def _kill_at_point(stack: ChaosStack, point: str, step: str) -> float | None:
    """Arm ``point`` of ``step``; when a GPU worker's child stops there, SIGKILL
    that whole worker, and wait for its next incarnation. The kill's time,
    or None when no step reached the point in time."""
    folder = stack.fault_dir
    folder.mkdir(parents=True, exist_ok=True)
    arm = folder / f"arm-{point}"
    arm.write_text(step)
    deadline = time.monotonic() + 30
    flag = None
    try:
        while flag is None and time.monotonic() < deadline:
            flag = next(iter(sorted(folder.glob(f"{point}-*"))), None)
            time.sleep(0.02)
    finally:
        arm.unlink()
    if flag is None:
        return None
    victim = stack.worker_of(int(flag.name.rsplit("-", 1)[1]))
    if victim is None:
        flag.unlink()
        return None
    incarnation = stack.incarnation(victim)
    at = stack.kill(victim)
    flag.unlink()
    until = time.monotonic() + 120
    while stack.incarnation(victim) in (None, incarnation):
        if time.monotonic() > until:
            raise RuntimeError(f"{victim} did not come back")
        time.sleep(0.1)
    return at


def pipelines_under_kills(stack: ChaosStack, o: Options) -> dict[str, Any]:
    """14. A cpu -> gpu -> cpu pipeline and a three-branch ensemble (on two
    queues) under load; a GPU worker SIGKILLed at each point of a step (mid-
    step, after its model returned and before the hop, just after the hop),
    for each: every request answered once, every step handed on once."""
    drain(stack)
    rate, duration = o.pick(6, 12), o.pick(50.0, 90.0)
    load = Load()
    kills: list[tuple[str, str, float | None]] = []
    stop = asyncio.Event()

    async def go() -> None:
        async def faults() -> None:
            await asyncio.sleep(2.0)
            for step in ("digits-cnn", "iris-knn"):
                for point in ("run", "hop", "handed"):
                    at = await asyncio.to_thread(_kill_at_point, stack, point, step)
                    kills.append((step, point, at))
            stop.set()

        await asyncio.gather(
            submit(stack.url, "digits-pipeline", DIGITS, rate, duration, load, stop),
            submit(stack.url, "iris-vote", IRIS, rate, duration, load, stop), faults())

    asyncio.run(go())
    times = [at for _, _, at in kills if at is not None]
    row = tally(stack, "14 pipelines: gpu kills at run/hop/handed", load,
                times[0] if times else None, timeout_s=180)
    # Per request batch (a flow: its requests' chain of steps), from the ledger.
    entries = [json.loads(e) for e in stack.client.lrange("turnout:ledger", 0, -1)]
    hops: Counter[tuple[str, int]] = Counter()
    starts: Counter[tuple[str, int]] = Counter()
    plans: dict[str, int] = {}
    for e in entries:
        if not e.get("flow"):
            continue
        plans[e["flow"]] = int(e.get("steps") or 0)
        if e["event"] == "hop" and e.get("stored") == 1:
            hops[(e["flow"], e["step"])] += 1
        elif e["event"] == "start":
            starts[(e["flow"], e["step"])] += 1
    twice = sum(1 for n in hops.values() if n > 1)
    # Every step but the last hands on (an ensemble's branches join) once.
    missing = sum(1 for flow, steps in plans.items() for step in range(steps - 1)
                  if hops[(flow, step)] != 1)
    row["flows"] = len(plans)
    row["kills"] = [f"{step}@{point}" + ("" if at else " (not reached)") for step, point, at in kills]
    row["steps_handed_on_twice"] = twice
    row["steps_not_handed_on_once"] = missing
    row["step_runs_beyond_one"] = sum(n - 1 for n in starts.values() if n > 1)
    time.sleep(stack.settings.dead_after_s + 2)
    row["unacked_after"] = int(stack.client.hlen("unacked"))
    check(row, all(at is not None for _, _, at in kills),
          f"a kill point was never reached ({row['kills']})")
    check(row, twice == 0, f"{twice} step(s) handed on twice")
    check(row, missing == 0, f"{missing} step(s) not handed on exactly once")
    check(row, row["unacked_after"] == 0, f"{row['unacked_after']} deliveries left unacked")
    return row


SCENARIOS: dict[str, Callable[[ChaosStack, Options], dict[str, Any]]] = {
    "1": gpu_kill_during_batch,
    "2": cpu_kill_under_load,
    "3": gpu_frozen,
    "4": long_job,
    "5": redis_kill,
    "6": redis_down,
    "7": hang,
    "8": poison,
    "9": revoke_then_restart,
    "10": soak,
    "11": lanes_under_kills,
    "12": deadlines_under_overload,
    "13": kill_holding_riders,
    "14": pipelines_under_kills,
}
