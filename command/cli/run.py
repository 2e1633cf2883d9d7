"""The commands that run a part of the stack: ``up``, ``api``, ``worker``,
and ``bench``, which hands its arguments to the benchmark."""

from __future__ import annotations

import click

from turnout.cli.context import Context, pass_context

_port = click.option("--port", type=int, envvar="TURNOUT_API_PORT", show_envvar=True,
                     help="API port (default 8000).")
_insecure = click.option(
    "--insecure-no-auth", is_flag=True, default=None, envvar="TURNOUT_INSECURE_NO_AUTH",
    show_envvar=True, help="Serve the API with no API keys on an address other than loopback, "
    "on purpose (anyone who reaches it may use it).")


@click.command()
@_port
@_insecure
@click.option("--flower", is_flag=True, help="Also run Flower (the Celery monitor) on "
              "TURNOUT_FLOWER_PORT, with task events on and a generated password.")
@pass_context
def up(ctx: Context, port: int | None, insecure_no_auth: bool | None, flower: bool) -> int:
    """Run the whole stack on this machine: Redis, workers and the API."""
    from turnout.stack.up import Stack

    settings = ctx.settings(api_port=port, insecure_no_auth=insecure_no_auth,
                            events=True if flower else None)
    ctx.table()  # a bad route table stops `up` before anything starts
    return Stack(settings, port=settings.api_port, flower=flower).run()


@click.command()
@click.option("--host", envvar="TURNOUT_API_HOST", show_envvar=True,
              help="Address to bind (default 127.0.0.1).")
@_port
@_insecure
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status; "
              "never headers, so never a key).")
@pass_context
def api(ctx: Context, host: str | None, port: int | None, insecure_no_auth: bool | None,
        access_log: bool) -> int:
    """Run the HTTP API."""
    import uvicorn

    from turnout.core import broker
    from turnout.core.access import check_bind_against
    from turnout.router.api.app import create_asgi

    settings = ctx.settings(api_host=host, api_port=port, insecure_no_auth=insecure_no_auth)
    ctx.logging()
    # A broker that cannot be reached (a wrong CA, a wrong password) stops the
    # command with the reason, before uvicorn's lifespan buries it in a trace.
    broker.check(settings.redis())
    check_bind_against(settings)
    uvicorn.run(
        create_asgi(settings, ctx.table()),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


@click.command()
@click.argument("kind", type=click.Choice(["cpu", "gpu", "train"]))
@click.option("--device", help="gpu, train: the GPU index to pin to; 'cpu' to run on the CPU; "
              "gpu 'cpu:N': on the CPU in device N's place (it consumes gpu.N).")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="cpu: pool size (default: cores).")
@click.option("--name", help="Celery node name (default cpu@host, gpuN@host).")
@click.option("--queues", help="Consume these queues (comma-separated) instead of the kind's "
              "own: e.g. a GPU worker that also serves the CPU queue.")
@click.option("--memory-limit-mb", type=float, help="gpu: the most device memory this "
              "worker's models may use; a model that does not fit is refused, and the "
              "allocator enforces the cap.")
@pass_context
def worker(ctx: Context, kind: str, device: str | None, concurrency: int | None,
           name: str | None, queues: str | None, memory_limit_mb: float | None) -> int:
    """Run a CPU, GPU or training worker (the training lane: one job at a
    time, a fresh process per job)."""
    from turnout.workers.start import worker_spec

    spec = worker_spec(kind, device=device, concurrency=concurrency, name=name, queues=queues,
                       memory_limit_mb=memory_limit_mb)
    # Imported after the spec: a GPU worker pins its device before torch loads.
    from turnout.core import broker
    from turnout.workers.run import run_worker

    ctx.logging()
    broker.check(ctx.settings().redis())
    return run_worker(spec, ctx.settings(), ctx.table())


# The benchmark and the reliability suite parse their own arguments (argparse,
# with their own --help); they are imported only when run, since they pull in
# matplotlib and their baselines.
_PASSTHROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@click.command(context_settings=_PASSTHROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> int:
    """The benchmark: turnout bench --help."""
    from turnout.benchmarks.run import main

    return main(list(args))


@click.command(context_settings=_PASSTHROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def chaos(args: tuple[str, ...]) -> int:
    """The reliability suite: turnout chaos --help."""
    from turnout.benchmarks.chaos.run import main

    return main(list(args))
