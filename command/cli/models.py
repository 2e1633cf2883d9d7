"""The commands about what is served: ``routes check`` and ``models build``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from turnout.cli.context import Context, pass_context
from turnout.cli.own_models import add_command
from turnout.core import broker
from turnout.core.errors import ConfigError
from turnout.core.routes import compose


@click.group()
def routes() -> None:
    """The route table."""


@routes.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@pass_context
def routes_check(ctx: Context, file: Path | None) -> int:
    """Validate and print a route table; starts nothing."""
    settings = ctx.settings()
    path = file or settings.routes_file
    _, table = compose(path, settings.models_dir)
    composed = f", {len(table.flows)} pipeline(s) or ensemble(s)" if table.flows else ""
    click.echo(f"{path}: {len(table.routes)} model(s){composed}, valid")
    click.echo(f"{'model':<16} {'framework':<10} {'version':<8} {'queue':<8} {'fallback':<9} "
               f"{'input':<14} {'limit_s':>7} {'rows':>5} {'batch':>5}")
    for r in table.routes.values():
        shape = r.input.summary()
        click.echo(f"{r.name:<16} {r.framework:<10} {r.version:<8} {r.queue:<8} "
                   f"{r.fallback or '-':<9} {shape:<14} {r.time_limit_s:>7g} {r.max_rows:>5} "
                   f"{r.max_batch or '-':>5}")
    for flow in table.flows.values():
        if flow.steps is not None:
            shown = " -> ".join(s.model or f"{s.transform} ({s.queue or 'cpu'})" for s in flow.steps)
        else:
            shown = f"{' + '.join(flow.ensemble or ())}, {flow.combiner} ({flow.combine_queue})"
        click.echo(f"{flow.name:<16} {flow.kind:<10} {shown}")
    queues = sorted({q for r in table.routes.values() for q in r.queues} | set(table.queues))
    click.echo("queues: " + ", ".join(
        f"{q} (max_depth {table.queue_config(q).max_depth})" for q in queues))
    return 0


@click.command()
@pass_context
def reload(ctx: Context) -> int:
    """Re-read the route table and put it in force in every running process.

    Models added, removed or re-routed take effect without a restart. A bad
    file is refused (the error names the key) and the last good table stays.
    Sending SIGHUP to `turnout up` does the same.
    """
    import redis

    from turnout.core.routes import shared

    settings = ctx.settings()
    client = broker.connect(settings.redis(), socket_timeout=5)
    try:
        generation, table = shared.publish(client, settings.routes_file, settings.models_dir)
    except ConfigError as exc:
        click.echo(f"turnout: route table not reloaded, the last good one stays: {exc}", err=True)
        return 2
    except redis.RedisError as exc:
        click.echo(f"turnout: route table not reloaded: Redis is unreachable ({exc})", err=True)
        return 1
    finally:
        client.close()
    click.echo(f"turnout: {settings.routes_file} in force (generation {generation}): "
               f"{', '.join(sorted(table.routes))}")
    return 0


@click.group()
def models() -> None:
    """Model artifacts: the shipped ones, your own, their versions."""


add_command(models)


@models.command("build")
@click.argument("names", nargs=-1)
@click.option("--missing", is_flag=True, help="Only those not built yet.")
@pass_context
def models_build(ctx: Context, names: tuple[str, ...], missing: bool) -> int:
    """Build the shipped models (iris, digits-cnn, minilm) from bundled data."""
    from turnout.ml.build import build_table

    status = 0
    for built in build_table(ctx.settings().models_dir, ctx.table(), names, missing):
        if isinstance(built, str):
            click.echo(f"turnout: {built}")
            status = 2
            continue
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in built.metrics.items())
        click.echo(f"turnout: built {built.name} v{built.version} in {built.seconds:.1f} s "
                   f"({metrics}) -> {built.folder}")
    return status


@models.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--canary", "canary_percent", type=click.FloatRange(0, 100),
              help="Send this percent of requests to VERSION instead (0 ends a canary).")
@click.option("--wait", type=float, default=120.0, help="Seconds to wait for it to load.")
@pass_context
def models_promote(
    ctx: Context, name: str, version: str, canary_percent: float | None, wait: float
) -> int:
    """Make VERSION the default of model NAME, with no request failed (or a canary).

    Every worker loads it beside the old one; the default flips once it is
    ready everywhere. Rolling back is promoting the old version again.
    """
    from turnout.client import ApiError

    with ctx.client() as client:
        try:
            body = client.promote(name, version, canary_percent, wait)
        except ApiError as exc:
            click.echo(f"turnout: {name} v{version} not promoted: {exc.detail}", err=True)
            return 1
    if body.get("status") == "loading":
        click.echo(f"turnout: {name} v{version} still loading after {wait:g} s "
                   f"({'; '.join(body.get('detail') or [])}); the rollout goes on: "
                   f"see `GET {body['status_url']}`")
        return 3
    click.echo(f"turnout: {name}: {promoted_text(body)}")
    return 0


def promoted_text(body: dict[str, Any]) -> str:
    """What a promote call did, in words, from its answer."""
    serving = f"v{body['version']} serves"
    canary = body.get("canary")
    if canary:
        return (f"canary v{canary['version']} takes {canary['percent']:g}% of requests; "
                f"{serving} the rest")
    if body.get("canary_ended"):
        return f"canary v{body['canary_ended']} ended, {serving}"
    if body.get("previous"):
        return f"{serving} now (was v{body['previous']})"
    return f"{serving} (nothing changed)"
