"""The cluster rehearsal's scenarios (``turnout chaos --cluster``): faults
that only several machines can have. Each returns one row, counted as the
single-host scenarios count (``tally``: every accepted job read back, the
ledger's runs and results), plus checks of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.benchmarks.chaos.cluster.stack import ClusterStack
from turnout.benchmarks.chaos.cluster.tls import make_ca
from turnout.benchmarks.chaos.load import Ledger, Load, submit
from turnout.benchmarks.chaos.scenarios import _batch_job
from turnout.benchmarks.chaos.stack import CPU_WORKER, GPU_WORKERS
from turnout.benchmarks.chaos.tally import Options, check, drain, post, tally
from turnout.benchmarks.client import closed_loop_spread
from turnout.benchmarks.scenarios import BODIES, DIGITS_ROW, IRIS_ROW, predict_path
from turnout.client import ApiError, AsyncClient
from turnout.core.settings import RedisSettings

IRIS = {"inputs": [IRIS_ROW]}
REPO = Path(__file__).resolve().parents[3]


def _ran_by(ledger: Ledger, incarnation: str | None) -> list[str]:
    """Tasks ``incarnation`` started and no one has stored a result for."""
    return [task for task, entries in ledger.by_task.items()
            if any(e["event"] == "start" and e.get("incarnation") == incarnation for e in entries)
            and not any(e["event"] == "result" and e.get("stored") == 1 for e in entries)]


def _wait_replaced(stack: ClusterStack, name: str, old: str | None, timeout_s: float) -> float | None:
    """Seconds until ``name`` beats with an incarnation other than ``old``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        now = stack.incarnation(name)
        if now is not None and now != old:
            return round(time.monotonic() - t0, 1)
        time.sleep(0.2)
    return None


def link_cut(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """A. A GPU worker host's network cut for 20 s in the middle of a batch
    job, then healed: its jobs run elsewhere, it writes no second result,
    and it replaces itself."""
    drain(stack)
    cut_s = 20.0
    _, chunk_ids = _batch_job(stack, "slow-digits", DIGITS_ROW, o.pick(30, 80), 16)
    time.sleep(1.5)
    victim = stack.busy_gpu_worker()
    incarnation = stack.incarnation(victim)
    at = stack.cut(victim)
    # What it held at the cut (read after it, so nothing starts in between).
    running = _ran_by(Ledger.read(stack.client), incarnation)
    time.sleep(cut_s)
    healed = stack.heal(victim)
    replaced = _wait_replaced(stack, victim, incarnation, 90)
    row = tally(stack, f"A link of a gpu host cut {cut_s:.0f} s", Load(), at,
                extra_ids=chunk_ids, timeout_s=180)
    ledger = Ledger.read(stack.client)
    backs = []
    for task in running:
        done = [e["t"] for e in ledger.by_task.get(task, [])
                if e["event"] == "result" and e.get("stored") == 1]
        backs.append(round(min(done) - at, 2) if done else None)
    late = [e for entries in ledger.by_task.values() for e in entries
            if e["event"] == "result" and e.get("stored") == 1
            and e.get("incarnation") == incarnation and e["t"] > at]
    row.update(cut_worker=victim, held_at_cut=len(running), cut_to_result_s=backs,
               replaced_after_heal_s=replaced, results_by_cut_worker_after_cut=len(late))
    check(row, bool(running), "the cut worker held no job at the cut (nothing was tested)")
    check(row, all(b is not None and b <= 10 for b in backs),
          f"a job of the cut worker was not done elsewhere within 10 s: {backs}")
    check(row, not late, f"the cut worker stored {len(late)} result(s) after the cut")
    check(row, replaced is not None, f"{victim} did not replace itself within 90 s of the heal")
    row["heal_s"] = round(healed - at, 1)
    return row


async def _callers(stack: ClusterStack, clients: int, duration_s: float,
                   models: tuple[str, ...], during: Callable[[], Any]) -> list[tuple[str, str]]:
    """``clients`` closed loops of ``turnout.client`` predicts (wait 10 s), each
    holding both API URLs (half of them starting on each), while ``during``
    runs; every call's outcome: ("ok", task id) or ("failed", why)."""
    outcomes: list[tuple[str, str]] = []
    end = time.monotonic() + duration_s

    async def caller(i: int) -> None:
        urls = stack.urls[i % 2:] + stack.urls[:i % 2]
        async with AsyncClient(urls, api_key="", retry_for_s=45, timeout=30) as client:
            n = 0
            while time.monotonic() < end:
                model = models[(i + n) % len(models)]
                n += 1
                row = IRIS_ROW if model == "iris" else DIGITS_ROW
                try:
                    body = await client.predict(model, [row], wait=10)
                    outcomes.append(("ok", str(body["task_id"])))
                except (ApiError, TimeoutError) as exc:
                    outcomes.append(("failed", f"{type(exc).__name__}: {str(exc)[:160]}"))

    await asyncio.gather(*(caller(i) for i in range(clients)), asyncio.to_thread(during))
    return outcomes


def _client_row(stack: ClusterStack, name: str, outcomes: list[tuple[str, str]],
                fault_at: float | None) -> dict[str, Any]:
    """A row for closed-loop clients: each call one request; a failed call is
    a request its client could not get done."""
    ledger = Ledger.read(stack.client)
    done = {task for kind, task in outcomes if kind == "ok"}
    failed = [why for kind, why in outcomes if kind == "failed"]
    # Requests that ran but that no caller got back: a second task made for
    # one call (an Idempotency-Key that failed), or a failed call's task.
    orphans = [r for r in ledger.runs if r not in done]
    row: dict[str, Any] = {
        "scenario": name, "submitted": len(outcomes), "accepted": len(outcomes),
        "refused": dict(Counter(why.split(":")[0] for why in failed)),
        "completed": len(done), "lost": 0, "unexpected": 0,
        "runs_beyond_one": sum(max(0, ledger.runs[i] - 1) for i in done),
        "results_beyond_one": sum(max(0, n - 1) for n in ledger.stored.values()),
        "second_results_dropped": ledger.stats.get("duplicate_results", 0)
        + ledger.stats.get("fenced_results", 0),
        "recovery_s": None, "failed_requests": len(failed), "tasks_no_caller_got": len(orphans),
        "restarts": [n for t, n in stack.restarts if fault_at and t >= fault_at - 1],
        "timeline": {"results_t": ledger.results_t},
    }
    if failed:
        row["first_failures"] = failed[:3]
    check(row, not failed, f"{len(failed)} request(s) failed at the client")
    check(row, not orphans, f"{len(orphans)} task(s) ran that no caller got (duplicates)")
    return row


def api_killed(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """B. An API host's process SIGKILLed under load while every client holds
    both API URLs: the clients carry on through the other, no request is
    duplicated (each predict carries an Idempotency-Key)."""
    drain(stack)
    duration = o.pick(12.0, 30.0)
    fault: list[float] = []

    def kill_later() -> None:
        time.sleep(duration / 3)
        fault.append(stack.kill("api1"))

    outcomes = asyncio.run(_callers(stack, 16, duration, ("iris",), kill_later))
    row = _client_row(stack, "B api host SIGKILL, clients on both", outcomes, fault[0])
    check(row, "api1" in row["restarts"], "the killed API process was not started again")
    return row


def rolling_restart(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """C. Every worker restarted one at a time under load (a rolling
    upgrade: SIGTERM, a warm shutdown; the supervisor starts the new one):
    no request fails."""
    drain(stack)
    order = [CPU_WORKER, *GPU_WORKERS]
    back: dict[str, float | None] = {}
    first: list[float] = []

    def roll() -> None:
        time.sleep(2)
        for name in order:
            old = stack.incarnation(name)
            at = stack.kill(name, signal.SIGTERM, group=False)
            first.append(at)
            back[name] = _wait_replaced(stack, name, old, 120)
            time.sleep(1)

    # Long enough for the three restarts (each a start and a model load).
    outcomes = asyncio.run(_callers(stack, 8, o.pick(40.0, 60.0), ("iris", "digits-cnn"), roll))
    row = _client_row(stack, "C rolling restart of every worker", outcomes,
                      first[0] if first else None)
    row["back_in_s"] = back
    check(row, all(v is not None for v in back.values()),
          f"a worker did not come back: {back}")
    return row


def _worker_refused(stack: ClusterStack, url: str) -> subprocess.CompletedProcess[str]:
    """A worker started on the CPU host with broker ``url`` (it must stop)."""
    env = {**stack.env, "TURNOUT_BROKER_URL": url}
    return subprocess.run(
        [*stack.net.exec_prefix("cpu"), sys.executable, "-m", "turnout", "worker", "cpu",
         "--name", "probe@cpu"], env=env, capture_output=True, text=True, timeout=90, cwd=REPO,
        check=False)


def tls(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """D. TLS to the broker: the cluster runs on rediss:// with a CA made for
    the run; a worker given another CA, and one given a plain redis:// URL,
    stop at once saying why, never falling back to plain text."""
    other, _ = make_ca(stack.folder / "other-ca", "someone-else")
    broker = stack.broker
    wrong = RedisSettings.from_url(broker.bare_url + f"?ssl_ca_certs={other}")
    plain = RedisSettings(broker.host, broker.port, password=broker.password)
    row: dict[str, Any] = {"scenario": "D tls: the wrong CA, plain text", "submitted": 0,
                           "accepted": 0, "completed": 0, "lost": 0, "unexpected": 0,
                           "results_beyond_one": 0, "timeline": {"results_t": []}}
    for label, settings, says in (
        ("wrong_ca", wrong, "does not verify against the trusted CA"),
        ("plain_text", plain, "the URL must be rediss://"),
    ):
        done = _worker_refused(stack, settings.url)
        said = (done.stderr.strip().splitlines() or [""])[-1]
        row[label] = {"exit": done.returncode, "said": said}
        check(row, done.returncode == 2 and says in said,
              f"{label}: expected exit 2 saying {says!r}, got {done.returncode}: {said!r}")
        secret = broker.password or ""
        check(row, secret not in done.stdout + done.stderr, f"{label}: the password was printed")
    port = stack.client.config_get("port").get("port")
    row["plain_port"] = port
    check(row, port == "0", f"the broker also listens in plain text (port {port})")
    return row


def _broker_fault(stack: ClusterStack, o: Options, name: str, start: Callable[[], None],
                  end: Callable[[], None], says: str) -> dict[str, Any]:
    """Submits at a steady rate while the broker refuses writes for a while:
    every submit then is refused with a 503 naming ``says``, nothing accepted
    before is lost, no part restarts, and submits succeed again after."""
    drain(stack)
    rate, duration = o.pick(60, 150), o.pick(15.0, 30.0)
    load = Load()
    window: list[float] = []
    said: list[str] = []

    async def go() -> None:
        async def fault() -> None:
            await asyncio.sleep(duration / 3)
            window.append(time.time())
            await asyncio.to_thread(start)
            stack.faults.append((window[0], name))
            said.append(await asyncio.to_thread(_one_submit, stack))
            await asyncio.sleep(duration / 3)
            await asyncio.to_thread(end)
            window.append(time.time())

        await asyncio.gather(submit(stack.url, "iris", IRIS, rate, duration, load), fault())

    asyncio.run(go())
    row = tally(stack, name, load, window[0])
    refused = [s for s in load.sent if s.status == 503]
    row["refused_during"] = sum(1 for s in refused if window[0] - 1 <= s.t <= window[1] + 1)
    row["accepted_after"] = sum(1 for s in load.accepted if s.t > window[1] + 2)
    row["says"] = said[0] if said else ""
    check(row, bool(refused), "no submit was refused while the broker refused writes")
    check(row, row["accepted_after"] > 0, "no submit was accepted after the broker recovered")
    check(row, not row["restarts"], f"parts restarted: {row['restarts']}")
    check(row, row["says"].startswith("503") and says in row["says"],
          f"the submit during the fault did not hear a 503 naming the cause: {row['says']!r}")
    return row


def _one_submit(stack: ClusterStack) -> str:
    """What one submit hears: its status and the detail of a refusal."""
    status, reply = post(stack, "/v1/models/iris/predict", IRIS)
    return f"{status}: {reply.get('detail', '')}"


def out_of_memory(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """E. The broker reaches its maxmemory (noeviction) under load, then is
    given room: submits refused with a 503 that says so, nothing lost."""
    limit: list[int] = []

    def start() -> None:
        used = int(stack.client.info("memory")["used_memory"])
        limit.append(used)
        stack.client.config_set("maxmemory", str(used))

    def end() -> None:
        stack.client.config_set("maxmemory", "0")

    return _broker_fault(stack, o, "E broker out of memory", start, end, "out of memory")


def disk_full(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """F. The broker's disk fills (its append-only file cannot be written)
    under load, then is freed: submits refused with a 503 that says so,
    nothing lost."""
    filler = stack.redis_dir / "filler"

    def start() -> None:
        # Fill what is left of the broker's own (small) filesystem.
        free = os.statvfs(stack.redis_dir)
        left = free.f_bavail * free.f_frsize
        with filler.open("wb") as fh:
            fh.truncate(0)
            chunk = b"\0" * (1 << 20)
            with contextlib.suppress(OSError):
                for _ in range(left // len(chunk) + 2):
                    fh.write(chunk)
                fh.flush()
        # Redis notices at its next write of the file (within a second).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if stack.client.info("persistence").get("aof_last_write_status") == "err":
                return
            try:
                stack.client.set("turnout:rehearsal:probe", "x")
            except Exception:  # noqa: BLE001 - the refusal is what we wait for
                return
            time.sleep(0.1)

    def end() -> None:
        filler.unlink(missing_ok=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if stack.client.info("persistence").get("aof_last_write_status") == "ok":
                return
            time.sleep(0.1)

    return _broker_fault(stack, o, "F broker disk full", start, end, "cannot write to its disk")


def _promote(stack: ClusterStack) -> tuple[float, float]:
    """SIGKILL the primary the Sentinels name; (when, seconds until they name
    another)."""
    assert stack.group is not None
    old = stack.group.primary()
    at = time.time()
    proc = stack.group.server_at(old).proc
    assert proc is not None
    proc.kill()
    stack.faults.append((at, f"SIGKILL the primary {old[0]}"))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        try:
            if stack.group.primary() != old:
                return at, round(time.monotonic() - t0, 2)
        except RuntimeError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the Sentinels promoted no replica within 60 s")


def _failover_under_load(stack: ClusterStack, o: Options, url: str,
                         name: str) -> tuple[dict[str, Any], Load, float]:
    """300 submits a second through ``url``, the primary SIGKILLed a third of
    the way in; the tallied row (with the promotion time and how long submits
    were refused), the load, and when the kill was."""
    drain(stack)
    duration = o.pick(15.0, 30.0)
    load = Load()
    fault: list[tuple[float, float]] = []

    async def go() -> None:
        async def kill_later() -> None:
            await asyncio.sleep(duration / 3)
            fault.append(await asyncio.to_thread(_promote, stack))

        await asyncio.gather(submit(url, "iris", IRIS, 300, duration, load), kill_later())

    asyncio.run(go())
    at, promoted = fault[0]
    row = tally(stack, name, load, at, timeout_s=90)
    refused = sorted(s.t for s in load.sent if s.status != 202 and s.t >= at - 1)
    row.update(promoted_after_s=promoted,
               submits_refused_for_s=round(refused[-1] - refused[0], 2) if refused else 0.0)
    return row, load, at


def sentinel_failover(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """G. The broker's primary SIGKILLed under 300 req/s, with three
    Sentinels and two replicas (asynchronous replication): every part
    follows the new primary without a restart; the row says what was lost
    (accepted, never answered) and how long submits were refused."""
    row, load, at = _failover_under_load(stack, o, stack.url, "G sentinel failover at 300 req/s")
    row.update(
        accepted_before_kill=sum(1 for s in load.accepted if s.t < at),
        # What asynchronous replication may lose: jobs accepted by the old
        # primary and not yet on the replica that took over. Measured, not
        # failed on: scenario H is the one that must lose nothing.
        loss_is_the_measure=True,
    )
    parts = [r for r in row["restarts"] if r in ("api1", "api2")]
    check(row, not parts, f"API processes restarted: {parts}")
    check(row, row["accepted"] > row["accepted_before_kill"],
          "no submit was accepted after the failover")
    return row


def _closed(url: str, clients: int, seconds: float) -> dict[str, Any]:
    run = asyncio.run(closed_loop_spread([url], predict_path("iris"), BODIES["iris"], clients,
                                         duration_s=seconds))
    summary = run.summary()
    return {k: summary[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "errors")}


def sentinel_failover_replicated(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """H. Accepted means on a replica (TURNOUT_BROKER_REPLICAS=1 on api1):
    its cost at 1 and 32 clients against api2 without it, side by side; then
    the primary SIGKILLed under 300 req/s through api1: no accepted job lost."""
    assert stack.group is not None
    stack.group.restore()  # three servers again, the one G killed now a replica
    stack.parts["api1"].env = {**stack.env, "TURNOUT_BROKER_REPLICAS": "1"}
    old = stack.kill("api1", signal.SIGTERM, group=False)
    deadline = time.monotonic() + 60
    while not any(t > old and name == "api1" for t, name in stack.restarts):
        if time.monotonic() > deadline:
            raise RuntimeError("api1 was not started again with the replica option")
        time.sleep(0.1)
    drain(stack)
    seconds = o.pick(2.0, 4.0)
    cost: dict[str, Any] = {}
    for clients in (1, 32):
        _closed(stack.urls[0], clients, 1.0)  # warm-up
        for label, url in (("replicated", stack.urls[0]), ("primary only", stack.urls[1])):
            cost[f"{label} c={clients}"] = _closed(url, clients, seconds)
    row, _, _ = _failover_under_load(stack, o, stack.urls[0],
                                     "H the same, accepted = on a replica")
    row["cost"] = cost
    for c in (1, 32):
        on, off = cost[f"replicated c={c}"], cost[f"primary only c={c}"]
        row[f"throughput_ratio_c{c}"] = round(on["throughput_rps"] / max(1e-9, off["throughput_rps"]), 3)
        row[f"p50_ratio_c{c}"] = round(on["p50_ms"] / max(1e-9, off["p50_ms"]), 3)
    return row


def _broker_rtt_ms(stack: ClusterStack, n: int = 200) -> float:
    """The median round trip of a PING from this (the client) host to the
    broker, through whatever lies between."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        stack.client.ping()
        times.append(time.perf_counter() - t0)
    times.sort()
    return round(1000 * times[n // 2], 3)


def _spread(stack: ClusterStack, clients: int, seconds: float) -> dict[str, Any]:
    """bench b's measure: iris, closed loop, the clients dealt over both APIs."""
    run = asyncio.run(closed_loop_spread(stack.urls, predict_path("iris"), BODIES["iris"],
                                         clients, duration_s=seconds))
    summary = run.summary()
    return {k: summary[k] for k in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms")}


def latency_and_loss(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """I. 2 ms round trips and 1% loss between every host: bench b's figures
    (iris, closed loop, 1 and 32 clients over both APIs) on a clean network,
    with the delay, and with the delay and the loss, side by side in one run;
    no request fails."""
    from turnout.benchmarks.chaos.cluster.netns import loss_missing

    why = loss_missing()
    if why:
        raise RuntimeError(why)
    if stack.delay_file is None:
        raise RuntimeError("scenario I needs the stack made with delayed=True")
    drain(stack)
    seconds = o.pick(4.0, 10.0)
    row: dict[str, Any] = {"scenario": "I 2 ms round trips, 1% loss", "submitted": 0,
                           "accepted": 0, "completed": 0, "lost": 0, "unexpected": 0,
                           "results_beyond_one": 0, "timeline": {"results_t": []},
                           "netem": stack.net.netem() or "available (not used)"}
    # 1 ms each way; the forwarder's own wake-ups add a little, and the row
    # gives the round trip as measured.
    one_way = 1.0
    conditions = (("clean", 0.0, 0.0), ("2 ms", one_way, 0.0), ("2 ms + 1% loss", one_way, 1.0))
    figures: dict[str, Any] = {}
    try:
        for label, delay, loss in conditions:
            stack.set_delay(delay)
            stack.net.unlose()
            if loss:
                stack.net.lose(loss)
            rtt = _broker_rtt_ms(stack)
            for clients in (1, 32):
                _spread(stack, clients, 1.0)  # warm-up: connections and pools at this size
                figure = _spread(stack, clients, seconds)
                figures[f"{label} c={clients}"] = {**figure, "broker_rtt_ms": rtt}
            if loss:
                row["packets_dropped"] = stack.net.dropped()
    finally:
        stack.net.unlose()
        stack.set_delay(0)
    row["one_way_delay_ms"] = one_way
    row["figures"] = figures
    for label, _, _ in conditions[1:]:
        for c in (1, 32):
            on, off = figures[f"{label} c={c}"], figures[f"clean c={c}"]
            key = label.replace(" ", "").replace("%", "pct").replace("+", "_")
            row[f"throughput_ratio_{key}_c{c}"] = round(
                on["throughput_rps"] / max(1e-9, off["throughput_rps"]), 3)
            row[f"p99_ratio_{key}_c{c}"] = round(on["p99_ms"] / max(1e-9, off["p99_ms"]), 3)
    requests = sum(f["requests"] + f["errors"] for f in figures.values())
    errors = sum(f["errors"] for f in figures.values())
    row.update(submitted=requests, accepted=requests, completed=requests - errors)
    check(row, errors == 0, f"{errors} request(s) failed")
    added_rtt = figures["2 ms c=1"]["broker_rtt_ms"] - figures["clean c=1"]["broker_rtt_ms"]
    row["added_rtt_ms"] = round(added_rtt, 3)
    check(row, 1.5 <= added_rtt <= 4.0, f"the delay added {added_rtt:.2f} ms to a round trip, not 2")
    check(row, row.get("packets_dropped", 0) > 0, "no packet was dropped with 1% loss on")
    return row


def _until(what: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until ``what()`` holds, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if what():
            return round(time.monotonic() - t0, 1)
        time.sleep(0.25)
    return None


def monitoring(stack: ClusterStack, o: Options) -> dict[str, Any]:
    """J. A real Prometheus on the client host scrapes both API hosts: every
    query of the shipped Grafana dashboard and every alert rule evaluates
    without error; with the CPU worker stopped, the no-live-worker alert
    becomes active for iris, and it clears once the worker is back."""
    from turnout.benchmarks.chaos.cluster.monitoring import (
        Prometheus,
        alert_rules,
        dashboard_queries,
        missing,
    )

    why = missing()
    if why:
        raise RuntimeError(why)
    drain(stack)
    targets = [url.removeprefix("http://") for url in stack.urls]
    prometheus = Prometheus(stack.folder / "prometheus", targets)
    prometheus.start()
    row: dict[str, Any] = {"scenario": "J prometheus: dashboard, alert rules", "submitted": 0,
                           "accepted": 0, "completed": 0, "lost": 0, "unexpected": 0,
                           "results_beyond_one": 0, "timeline": {"results_t": []}}
    try:
        up = _until(lambda: set(prometheus.targets_up().values()) == {"up"}
                    and len(prometheus.targets_up()) == len(targets), 30)
        check(row, up is not None, f"not every API target is up: {prometheus.targets_up()}")
        # Traffic through both API processes, long enough for [1m] rates to
        # have two samples.
        for url in stack.urls:
            _closed(url, 4, o.pick(3.0, 6.0))
        time.sleep(3)
        queries = [(f"dashboard: {title}", expr) for title, expr in dashboard_queries()]
        queries += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
        errors, empty, no_data = [], [], set()
        for label, expr in queries:
            answer = prometheus.query(expr)
            if answer.get("status") != "success":
                errors.append(f"{label}: {answer.get('error')}")
            elif not answer["data"]["result"]:
                empty.append(label)
                no_data.add(expr)
        row["queries"] = len(queries)
        row["query_errors"] = errors
        # Empty is not an error where there is nothing to show: no GPU here,
        # and no refusal, fallback, OOM split or redelivery happened; every
        # other panel must show the traffic just sent.
        row["queries_empty"] = empty
        eventful = ("gpu", "refused", "errors_total", "fallback", "oom", "redeliver", "delivery_events")
        blank = [f"{title}: {expr}" for title, expr in dashboard_queries()
                 if not any(word in expr for word in eventful) and expr in no_data]
        check(row, not blank, f"dashboard panels with no data after traffic: {blank}")
        check(row, not errors, f"{len(errors)} query(ies) failed: {errors[:3]}")
        unhealthy = [f"{r['name']}: {r.get('lastError')}" for r in prometheus.rules()
                     if r.get("health") != "ok"]
        row["rules"] = len(prometheus.rules())
        check(row, row["rules"] == len(alert_rules()), f"{row['rules']} rules loaded")
        check(row, not unhealthy, f"rules that did not evaluate: {unhealthy}")

        def iris_alert() -> bool:
            return any(a["labels"].get("model") == "iris"
                       for a in prometheus.alerts("TurnoutNoLiveWorker"))

        check(row, not iris_alert(), "TurnoutNoLiveWorker was active with every worker up")
        stack.held.add(CPU_WORKER)
        stack.kill(CPU_WORKER, signal.SIGTERM, group=False)
        row["alert_active_after_s"] = _until(iris_alert, 30)
        stack.held.discard(CPU_WORKER)
        row["alert_cleared_after_s"] = _until(lambda: not iris_alert(), 90)
        check(row, row["alert_active_after_s"] is not None,
              "TurnoutNoLiveWorker did not become active for iris with its only worker stopped")
        check(row, row["alert_cleared_after_s"] is not None,
              "TurnoutNoLiveWorker did not clear once the CPU worker was back")
    finally:
        stack.held.discard(CPU_WORKER)
        prometheus.stop()
    return row


SCENARIOS: dict[str, Callable[[ClusterStack, Options], dict[str, Any]]] = {
    "A": link_cut,
    "B": api_killed,
    "C": rolling_restart,
    "D": tls,
    "E": out_of_memory,
    "F": disk_full,
    "G": sentinel_failover,
    "H": sentinel_failover_replicated,
    "I": latency_and_loss,
    "J": monitoring,
}
# The stack each scenario runs on: one Redis on TLS ("tls"), a primary, its
# replicas and Sentinels ("sentinel"), or the TLS stack with every server
# behind a delaying forwarder ("delayed"). One stack of each kind a run needs.
STACK_OF: dict[str, str] = {"G": "sentinel", "H": "sentinel", "I": "delayed"}
