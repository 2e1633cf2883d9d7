"""The commands about what is served: ``routes check`` and ``models build``."""

from __future__ import annotations

from pathlib import Path

import click

from turnout.cli.context import Context, pass_context
from turnout.routes import load_routes


@click.group()
def routes() -> None:
    """The route table."""


@routes.command("check")
@click.argument("file", required=False, type=click.Path(path_type=Path))
@pass_context
def routes_check(ctx: Context, file: Path | None) -> int:
    """Validate and print a route table; starts nothing."""
    path = file or ctx.settings().routes_file
    table = load_routes(path)
    click.echo(f"{path}: {len(table.routes)} model(s), valid")
    click.echo(f"{'model':<16} {'framework':<10} {'version':<8} {'queue':<8} {'fallback':<9} "
               f"{'input':<14} {'limit_s':>7} {'rows':>5} {'batch':>5}")
    for r in table.routes.values():
        shape = f"text<={r.input.max_length}" if r.input.kind == "text" else f"{r.input.width} numbers"
        click.echo(f"{r.name:<16} {r.framework:<10} {r.version:<8} {r.queue:<8} "
                   f"{r.fallback or '-':<9} {shape:<14} {r.time_limit_s:>7g} {r.max_rows:>5} "
                   f"{r.max_batch or '-':>5}")
    queues = sorted({q for r in table.routes.values() for q in r.queues} | set(table.queues))
    click.echo("queues: " + ", ".join(
        f"{q} (max_depth {table.queue_config(q).max_depth})" for q in queues))
    return 0


@click.group()
def models() -> None:
    """Model artifacts."""


@models.command("build")
@click.argument("names", nargs=-1)
@click.option("--missing", is_flag=True, help="Only those not built yet.")
@pass_context
def models_build(ctx: Context, names: tuple[str, ...], missing: bool) -> int:
    """Build the shipped models (iris, digits-cnn, minilm) from bundled data."""
    from ml.build import build_table

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
