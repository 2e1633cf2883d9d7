"""``turnout chaos [--quick] [--cluster] [--scenarios 1,2,…] [--out DIR]``: run the fault
scenarios on a stack of its own; print a table, write ``chaos.json`` and a
chart of completions over time for the worker-kill scenarios. Exits 1 when a
scenario lost a job, kept a second result, or missed its own check."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from turnout.benchmarks.chaos.report import passed, run_one, table
from turnout.benchmarks.chaos.scenarios import SCENARIOS
from turnout.benchmarks.chaos.stack import ChaosStack
from turnout.benchmarks.chaos.tally import Options
from turnout.core.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
CHARTED = ("1", "2", "10")
def chart(rows: list[dict[str, Any]], faults: dict[str, list[float]], out: Path) -> Path | None:
    charted = [r for r in rows if r["scenario"].split()[0] in CHARTED]
    if not charted:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(charted), 1, figsize=(9, 2.6 * len(charted)), squeeze=False)
    for ax, row in zip(axes[:, 0], charted, strict=True):
        times = row["timeline"]["results_t"]
        if not times:
            continue
        t0 = times[0]
        width = 1.0
        bins = int((times[-1] - t0) / width) + 1
        counts = [0] * bins
        for t in times:
            counts[int((t - t0) / width)] += 1
        ax.plot([i * width for i in range(bins)], [c / width for c in counts], lw=1)
        for f in faults.get(row["scenario"], []):
            ax.axvline(f - t0, color="red", ls="--", lw=0.8)
        ax.set_title(f"{row['scenario']}: results stored per second (red: faults)", fontsize=9)
        ax.set_xlabel("s")
    fig.tight_layout()
    path = out / "chaos.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def out_folder(given: str | None) -> Path:
    """``--out``, else ``$TURNOUT_HOME/chaos`` (as ``turnout bench`` does)."""
    return Path(given) if given else load_settings().home / "chaos"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="turnout chaos",
        description="The reliability suite: fault scenarios on a stack of its own, every job "
        "counted. Exits 1 if a job was lost or kept a second result.",
    )
    p.add_argument("--quick", action="store_true", help="a small version of each scenario")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help="which, comma-separated (default all: 1-10)")
    p.add_argument("--cluster", action="store_true",
                   help="the several-machines rehearsal instead: hosts made of network "
                   "namespaces (root; scenarios A-F)")
    p.add_argument("--out", default=None,
                   help="where chaos.json and chaos.png go (default $TURNOUT_HOME/chaos; the "
                   "committed figures are refreshed with --out benchmarks/results)")
    args = p.parse_args(argv)
    if args.cluster:
        from turnout.benchmarks.chaos.cluster.run import main as rehearse
        from turnout.benchmarks.chaos.cluster.scenarios import SCENARIOS as CLUSTER

        given = args.scenarios if args.scenarios != ",".join(SCENARIOS) else ",".join(CLUSTER)
        return rehearse([s.strip() for s in given.split(",") if s.strip()], args.quick,
                        out_folder(args.out))
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    options = Options(quick=args.quick)
    folder = Path(tempfile.mkdtemp(prefix="turnout-chaos-"))
    print(f"chaos: starting the stack (logs in {folder})", file=sys.stderr, flush=True)
    # Heartbeats and death at their defaults; kombu's visibility timeout at 2 s,
    # so that a live worker's long job would be taken from it if ownership failed.
    stack = ChaosStack(folder, {"TURNOUT_VISIBILITY_TIMEOUT_S": "2"})
    rows: list[dict[str, Any]] = []
    faults: dict[str, list[float]] = {}
    started = time.monotonic()
    try:
        stack.start()
        for key in wanted:
            print(f"chaos: scenario {key}: {(SCENARIOS[key].__doc__ or '').splitlines()[0]}",
                  file=sys.stderr, flush=True)
            t0 = time.time()
            row = run_one(SCENARIOS[key], key, stack, options)
            faults[row["scenario"]] = [t for t, _ in stack.faults if t >= t0]
            rows.append(row)
            print(table([row]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        stack.close()
    out = out_folder(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "scenarios": [{k: v for k, v in r.items() if k != "timeline"} | {"ok": passed(r)}
                      for r in rows],
    }
    (out / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")
    picture = chart(rows, faults, out)
    print(table(rows))
    print(f"chaos: wrote {out / 'chaos.json'}" + (f", {picture}" if picture else ""),
          file=sys.stderr)
    return 0 if all(passed(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
