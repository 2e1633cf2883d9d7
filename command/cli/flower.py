"""``turnout flower``: Flower against the stack's broker, behind basic auth."""

from __future__ import annotations

import click

from turnout.cli.context import Context, pass_context


@click.command()
@click.option("--port", type=int, envvar="TURNOUT_FLOWER_PORT", show_envvar=True,
              help="Flower's port (default 5555).")
@click.option("--address", default="127.0.0.1", help="Address to bind.")
@pass_context
def flower(ctx: Context, port: int | None, address: str) -> int:
    """Run Flower, the Celery monitor: workers, and every task with its state,
    worker and runtime. User 'turnout', password in $TURNOUT_HOME/flower.password."""
    from turnout.core.monitoring import FLOWER_USER, run_flower

    settings = ctx.settings(flower_port=port)
    click.echo(f"turnout: Flower on http://{address}:{settings.flower_port} (user "
               f"{FLOWER_USER!r}, password in {settings.home / 'flower.password'})", err=True)
    return run_flower(settings, address)
