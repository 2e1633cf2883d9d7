"""``turnout status``: the cluster on one screen (workers, queues, GPUs,
models), from a running API; ``--watch`` refreshes it, ``--json`` prints the
same data for scripts."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from turnout.cli.context import Context, pass_context
from turnout.core.messages import Heartbeat

if TYPE_CHECKING:
    from rich.console import Group

    from turnout.client import Client


def gather(client: Client) -> dict[str, Any]:
    """Everything the screen shows, as the API gives it."""
    return {
        "url": client.url,
        "at": time.time(),
        "workers": client.workers(),
        "queues": client.queues(),
        "devices": client.devices(),
        "models": client.models(),
    }


def _ago(ts: float | None, now: float) -> str:
    return "-" if not ts else f"{max(0.0, now - ts):.1f} s ago"


def _mb(value: Any) -> str:
    return "-" if value is None else f"{value / 1024:.1f} GiB"


def render(data: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.table import Table

    now = data["at"]
    workers = Table(title="workers", title_justify="left", expand=True)
    for column in ("name", "kind", "device", "busy", "models", "last seen"):
        workers.add_column(column)
    for doc in data["workers"]:
        # /v1/workers gives each heartbeat (turnout.core.messages) as sent,
        # with ``last_seen`` for its send time.
        w = Heartbeat.from_wire({**doc, "ts": doc.get("last_seen")})
        loaded = ", ".join(w.models) or "-"
        if w.refused:
            loaded += " (refused: " + ", ".join(w.refused) + ")"
        workers.add_row(w.name, w.kind, w.device, f"{w.busy}/{w.concurrency}", loaded,
                        _ago(w.ts, now))
    queues = Table(title="queues", title_justify="left", expand=True)
    for column in ("queue", "depth", "workers", "429 at"):
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for q in data["queues"]:
        queues.add_row(q["name"], str(q["depth"]), str(q["workers"]), str(q.get("max_depth", "")))
    gpus = Table(title="GPUs", title_justify="left", expand=True)
    for column in ("host", "index", "name", "workers", "busy", "memory used / total", "util",
                   "temp", "power"):
        gpus.add_column(column)
    for d in data["devices"]:
        util = d.get("utilization_pct")
        gpus.add_row(str(d.get("host")), str(d.get("index")), str(d.get("name", "-")),
                     ", ".join(d.get("workers", [])), str(d.get("busy", 0)),
                     f"{_mb(d.get('memory_used_mb'))} / {_mb(d.get('memory_total_mb'))}",
                     "-" if util is None else f"{util}%",
                     "-" if d.get("temperature_c") is None else f"{d['temperature_c']} °C",
                     "-" if d.get("power_w") is None else f"{d['power_w']} W")
    if not data["devices"]:
        gpus.caption = "no GPU worker is pinned to a device (none found, or all run on the CPU)"
    models = Table(title="models", title_justify="left", expand=True)
    for column in ("model", "framework", "version", "serving queue", "available"):
        models.add_column(column)
    for m in data["models"]:
        available = ("[green]yes[/green]" if m.get("available")
                     else f"[red]no[/red]: {m.get('unavailable_because') or ''}")
        models.add_row(m["name"], m["framework"], str(m.get("version")),
                       str(m.get("serving_queue") or "-"), available)
    return Group(workers, queues, gpus, models)


@click.command()
@click.option("--watch", is_flag=True, help="Refresh the screen until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0,
              help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the data as JSON, for scripts.")
@pass_context
def status(ctx: Context, watch: bool, interval: float, as_json: bool) -> int:
    """The cluster on one screen: workers, queues, GPUs and models."""
    from rich.console import Console
    from rich.live import Live

    from turnout.client import ApiError

    with ctx.client() as client:
        try:
            data = gather(client)
        except ApiError as exc:
            click.echo(f"turnout: cannot read the cluster's state: {exc}", err=True)
            return 1
        if as_json:
            click.echo(json.dumps(data, indent=2, sort_keys=True))
            return 0
        console = Console()
        if not watch:
            console.print(render(data))
            return 0
        with Live(render(data), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    live.update(render(gather(client)), refresh=True)
                except ApiError as exc:
                    live.console.print(f"[red]{exc}[/red]")
