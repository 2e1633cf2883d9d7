"""``turnout keys``: API keys, made, listed and revoked straight in Redis
(so it works before any API runs, and never sends a token over the wire)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import click

from turnout.cli.context import Context, pass_context
from turnout.core import broker

if TYPE_CHECKING:
    import redis


def _client(ctx: Context) -> redis.Redis:

    return broker.connect(ctx.settings().redis(), socket_timeout=5)


@click.group()
def keys() -> None:
    """API keys: bearer tokens with scope predict or admin."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["predict", "admin"]), default="predict",
              help="predict: predict, batches, own tasks; admin: also train, promote, reload, keys.")
@click.option("--rate", "rate_per_s", type=click.FloatRange(min=0, min_open=True),
              help="At most this many requests a second (per API process); over it, 429.")
@click.option("--max-priority", type=click.Choice(["high", "normal", "low"]),
              help="The highest lane its requests may ask for (a higher one: 403; the "
                   "endpoint's default comes down to it).")
@pass_context
def keys_create(ctx: Context, name: str, scope: str, rate_per_s: float | None,
                max_priority: str | None) -> int:
    """Make a key and print its token, once: only its hash is stored."""
    from turnout.core import access

    with _client(ctx) as client:
        key, token = access.create(client, name, scope, rate_per_s, max_priority)
    # The token alone on stdout, so that `$(turnout keys create …)` captures it.
    click.echo(token)
    click.echo(f"turnout: key {key.name!r} ({key.scope}) made; the token above is shown once "
               "and stored nowhere. Send it as 'Authorization: Bearer <token>' "
               "(turnout.client: TURNOUT_API_KEY).", err=True)
    return 0


@keys.command("list")
@pass_context
def keys_list(ctx: Context) -> int:
    """The keys' names, scopes and rates (never their tokens)."""
    from turnout.core import access

    with _client(ctx) as client:
        found = access.list_keys(client)
        closed = access.closed(client)
    if not found:
        click.echo("no API keys: the API is closed, since keys were made here "
                   "(`turnout keys reopen` opens it on loopback again)" if closed else
                   "no API keys: the API is open on loopback only")
        return 0
    click.echo(f"{'name':<24} {'scope':<8} {'rate/s':>8} {'lanes':<8} created")
    for key in found:
        made = datetime.datetime.fromtimestamp(key.created_at, datetime.UTC)
        rate = f"{key.rate_per_s:g}" if key.rate_per_s else "-"
        lanes = f"<={key.max_priority}" if key.max_priority else "any"
        click.echo(f"{key.name:<24} {key.scope:<8} {rate:>8} {lanes:<8} "
                   f"{made:%Y-%m-%d %H:%M:%S} UTC")
    return 0


@keys.command("revoke")
@click.argument("name")
@pass_context
def keys_revoke(ctx: Context, name: str) -> int:
    """Revoke a key: every API process refuses it within half a second."""
    from turnout.core import access

    with _client(ctx) as client:
        gone = access.revoke(client, name)
        left = access.list_keys(client)
    if not gone:
        click.echo(f"turnout: no API key named {name!r}", err=True)
        return 1
    click.echo(f"turnout: key {name!r} revoked")
    if not left:
        click.echo("turnout: that was the last key: the API stays closed to everyone until a "
                   "key is made, or `turnout keys reopen` opens it on loopback again", err=True)
    return 0


@keys.command("reopen")
@pass_context
def keys_reopen(ctx: Context) -> int:
    """With no key left, let the API on loopback serve without keys again.

    Once a key has been made, revoking the last one does not open the API: an
    operator who made keys meant it to need them. This says otherwise, on
    purpose. A public address still needs a key (or --insecure-no-auth).
    """
    from turnout.core import access

    with _client(ctx) as client:
        access.reopen(client)
    click.echo("turnout: no API keys, and the API on loopback is open again")
    return 0
