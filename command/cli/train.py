"""``turnout train``: start a training job on a running stack and show its
progress until it ends."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from turnout.cli.context import Context, pass_context


def _value(text: str) -> Any:
    """A parameter's value as JSON when it parses (numbers), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: tuple[str, ...], option: str, many: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        out[name] = [_value(v) for v in value.split(",")] if many else _value(value)
    return out


@click.command()
@click.argument("name")
@click.option("--dataset", required=True, help="Bundled (iris, digits, wine, breast_cancer) or a "
              "CSV/Parquet file's name in TURNOUT_DATA_DIR.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A trainer parameter, e.g. C=0.5 or epochs=20 (repeatable).")
@click.option("--search", "search", multiple=True, metavar="NAME=V1,V2,...",
              help="Try each value as its own trial; the best is kept (repeatable: a grid).")
@click.option("--seed", type=int, help="Seeds the held-out split and the trainer (default 0).")
@click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
@pass_context
def train(ctx: Context, name: str, dataset: str, params: tuple[str, ...],
          search: tuple[str, ...], seed: int | None, no_wait: bool) -> int:
    """Train a new version of model NAME on the training lane.

    The version is registered, never promoted: look at its metrics with
    `GET /v1/models/NAME`, then canary or promote it with
    `turnout models promote`.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from turnout.client import ApiError

    with ctx.client() as client:
        try:
            job = client.train(name, dataset, _pairs(params, "--param", False), seed,
                               _pairs(search, "--search", True))
        except ApiError as exc:
            click.echo(f"turnout: training not started: {exc.detail}", err=True)
            return 1
        job_id = job["job_id"]
        click.echo(f"turnout: training job {job_id}: {job['trials']} trial(s) on {job['lane']}")
        if no_wait:
            return 0
        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>5.1f}%"), TextColumn("{task.fields[detail]}"),
                      TimeElapsedColumn()) as bar:
            task = bar.add_task(name, total=100, detail="queued")
            while True:
                view = client.training(job_id)
                progress = view["progress"]
                detail = progress.get("stage", "")
                if "epoch" in progress:
                    detail += f" epoch {progress['epoch']}/{progress['epochs']} loss {progress.get('loss')}"
                bar.update(task, completed=progress["percent"], detail=detail)
                if view["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                    break
                time.sleep(0.5)
    if view["status"] != "SUCCESS":
        click.echo(f"turnout: training {view['status'].lower()}: {view.get('error', '')}", err=True)
        return 1
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in (view.get("metrics") or {}).items())
    for trial in view.get("trials") or []:
        score = f"{trial['score']:.4f}" if trial.get("score") is not None else trial.get("error", "")
        click.echo(f"  trial {trial['trial']} {trial['params']}: {trial['status']} {score}")
    click.echo(f"turnout: {name} version {view['version']} registered ({metrics}); not serving "
               f"yet: `turnout models promote {name} {view['version']} --canary 10`, then "
               f"`turnout models promote {name} {view['version']}`")
    return 0
