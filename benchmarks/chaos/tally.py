"""What the scenarios share: submitting one job, waiting for every accepted
job to end, and counting what became of each (``tally``)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from turnout.benchmarks.chaos.load import Ledger, Load, Sent, settle
from turnout.benchmarks.chaos.stack import ChaosStack
from turnout.core import delivery
from turnout.core.redis_keys import lane_keys


@dataclass
class Options:
    quick: bool

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


def check(row: dict[str, Any], ok: bool, failure: str) -> None:
    """One of a scenario's own checks: when it fails, ``failure`` says which
    and by how much, in the table and in chaos.json."""
    if not ok:
        row.setdefault("failed_checks", []).append(failure)


def post(stack: ChaosStack, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        stack.url + path, data=json.dumps(body).encode(), method="POST",
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def one(stack: ChaosStack, model: str, body: dict[str, Any], load: Load) -> str:
    status, reply = post(stack, f"/v1/models/{model}/predict", body)
    load.sent.append(_sent(status, reply.get("task_id"), model))
    assert status == 202, (status, reply)
    return str(reply["task_id"])


def _sent(status: int, task_id: str | None, model: str) -> Sent:
    return Sent(time.time(), status, task_id, 0.0, model)


def tally(
    stack: ChaosStack,
    name: str,
    load: Load,
    fault_at: float | None,
    timeout_s: float = 120,
    expect: Callable[[str, dict[str, Any]], bool] = lambda _id, v: v.get("status") == "SUCCESS",
    extra_ids: list[str] | None = None,
) -> dict[str, Any]:
    """Wait for every accepted job (and ``extra_ids``, read from Redis), then count."""
    ids = [s.task_id for s in load.accepted if s.task_id]
    views, last_done = settle(stack.url, ids, timeout_s)
    if extra_ids:
        more, last_more = settle(stack.url, extra_ids, timeout_s, client=stack.client)
        views.update(more)
        last_done = max(last_done, last_more) if ids else last_more
        ids += extra_ids
    ledger = Ledger.read(stack.client)
    final = {i: v for i, v in views.items() if v.get("status") in {"SUCCESS", "FAILURE", "REVOKED"}}
    unexpected = [i for i, v in final.items() if not expect(i, v)]
    row: dict[str, Any] = {
        "scenario": name,
        "submitted": len(load.sent) + len(extra_ids or []),
        "accepted": len(ids),
        "refused": load.refused(),
        "completed": len(final),
        "lost": len(ids) - len(final),
        "unexpected": len(unexpected),
        "runs_beyond_one": sum(max(0, ledger.runs[i] - 1) for i in ids),
        "results_beyond_one": sum(max(0, n - 1) for n in ledger.stored.values()),
        "second_results_dropped": ledger.stats.get("duplicate_results", 0)
        + ledger.stats.get("fenced_results", 0),
        "given_back": sum(v for k, v in ledger.stats.items() if k.startswith("given_back")),
        "recovery_s": round(last_done - fault_at, 2) if fault_at else None,
        "restarts": [n for t, n in stack.restarts if fault_at and t >= fault_at - 1],
    }
    unanswered = [x for x in load.sent if x.status == 0]
    if unanswered:
        # A request with no answer is ambiguous to its client: when it was
        # sent (from the fault) and how long it waited.
        row["no_answer"] = [[round(x.t - (fault_at or x.t), 2), round(x.latency_s, 2)]
                            for x in unanswered[:10]]
    if unexpected:
        row["first_unexpected"] = views[unexpected[0]]
    lost = [i for i in ids if i not in final]
    if lost:
        row["lost_jobs"] = [where(stack, i, views.get(i, {})) for i in lost[:5]]
    row["timeline"] = {"results_t": ledger.results_t}
    return row


def where(stack: ChaosStack, task_id: str, view: dict[str, Any]) -> dict[str, Any]:
    """Where a job that never ended is: its last state, and whether Redis
    still has its message in a queue or held by a worker."""
    found: dict[str, Any] = {"task_id": task_id, "status": view.get("status")}
    needle = task_id.encode()
    for queue in ("cpu", "gpu"):
        if any(needle in m for m in stack.client.lrange(queue, 0, -1)):
            found["in_queue"] = queue
    for tag, payload in stack.client.hgetall("unacked").items():
        if needle in payload:
            found["unacked_owner"] = stack.client.hget(delivery.OWNERS, tag)
    found["lease"] = stack.client.hget(delivery.LEASES, task_id)
    found["ledger"] = Ledger.read(stack.client).by_task.get(task_id)
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in found.items()}


def drain(stack: ChaosStack) -> None:
    """Before a scenario: every worker live, queues empty, counts reset."""
    stack.wait_healthy()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not any(stack.client.llen(key) for q in ("cpu", "gpu") for key in lane_keys(q)) \
                and not stack.client.hlen("unacked"):
            break
        time.sleep(0.2)
    stack.reset_counts()
    stack.restarts.clear()
