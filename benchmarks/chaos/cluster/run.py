"""``turnout chaos --cluster``: the scenarios that need several machines,
on hosts made of network namespaces on this one (root only). Prints its
table and writes ``chaos-cluster.json``; exits 1 when a scenario failed and
2 when the rehearsal cannot run here (saying why)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from turnout.benchmarks.chaos.cluster.netns import Network, NoNamespaces
from turnout.benchmarks.chaos.cluster.scenarios import SCENARIOS, STACK_OF
from turnout.benchmarks.chaos.cluster.stack import HOSTS, ClusterStack, missing
from turnout.benchmarks.chaos.tally import Options


def _run_on(make: Callable[[], ClusterStack], keys: list[str],
            options: Options) -> list[dict[str, Any]]:
    from turnout.benchmarks.chaos.report import run_one, table

    rows: list[dict[str, Any]] = []
    stack = None
    try:
        stack = make()
        stack.start()
        for key in keys:
            print(f"chaos --cluster: scenario {key}: "
                  f"{(SCENARIOS[key].__doc__ or '').splitlines()[0]}", file=sys.stderr, flush=True)
            row = run_one(SCENARIOS[key], key, stack, options)
            rows.append(row)
            print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    except Exception as exc:  # noqa: BLE001 - a stack that cannot start fails its scenarios
        done = {r["scenario"][0] for r in rows}
        rows += [run_one(_broken(exc), key, None, options) for key in keys if key not in done]
    finally:
        if stack is not None:
            stack.close()
    return rows


def _broken(exc: Exception) -> Callable[[Any, Options], dict[str, Any]]:
    def scenario(_stack: Any, _options: Options) -> dict[str, Any]:
        raise RuntimeError(f"the cluster did not start: {type(exc).__name__}: {exc}")

    return scenario


def main(wanted: list[str], quick: bool, out: Path) -> int:
    # Imported here: run.py imports this module for --cluster only.
    from turnout.benchmarks.chaos.report import passed, table

    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        print(f"turnout chaos --cluster: unknown scenario(s) {', '.join(unknown)}; known: "
              f"{', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"turnout chaos --cluster: cannot rehearse here: {why}", file=sys.stderr)
        return 2
    net = Network(HOSTS)
    try:
        net.create()
        # This process is the client host from here on (before any thread).
        net.enter("client")
    except (NoNamespaces, OSError) as exc:
        net.destroy()
        print(f"turnout chaos --cluster: cannot make the hosts: {exc}", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="turnout-cluster-"))
    print(f"chaos --cluster: {len(HOSTS)} hosts on {net.subnet}.0/24; logs in {folder}",
          file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    options = Options(quick=quick)
    try:
        # One stack per kind: TLS Redis, then behind the forwarders, then Sentinels.
        for kind in ("tls", "delayed", "sentinel"):
            keys = [k for k in wanted if STACK_OF.get(k, "tls") == kind]
            if keys:
                rows += _run_on(lambda w=folder / kind, k=kind: ClusterStack(  # type: ignore[misc]
                    w, {"TURNOUT_VISIBILITY_TIMEOUT_S": "2"}, net, sentinel=k == "sentinel",
                    delayed=k == "delayed"), keys, options)
    finally:
        net.destroy()
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "quick": quick,
        "hosts": {name: f"{net.subnet}.{octet}" for name, octet in HOSTS.items()},
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": [{k: v for k, v in r.items() if k != "timeline"} | {"ok": passed(r)}
                      for r in rows],
    }
    (out / "chaos-cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"chaos --cluster: wrote {out / 'chaos-cluster.json'}", file=sys.stderr)
    return 0 if rows and all(passed(r) for r in rows) else 1
