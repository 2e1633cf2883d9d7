"""The ``turnout`` command. Each subcommand parses its options and calls into
the package; no business logic lives here. ``main()`` returns an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from router.errors import ConfigError
from router.routes import RouteTable, load_routes
from router.settings import Settings, load_settings


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _table(settings: Settings) -> RouteTable:
    return load_routes(settings.routes_file)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from router.stack import Stack

    _table(settings)  # a bad route table stops `up` before anything starts
    return Stack(settings, port=args.port or settings.api_port).run()


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from router.api.app import create_asgi

    _logging(settings)
    app = create_asgi(settings, _table(settings))
    uvicorn.run(
        app,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind == "gpu":
        from workers.gpu import gpu_spec, pin_device

        if args.device is None:
            raise ConfigError("turnout worker gpu needs --device N (a GPU index) or --device cpu")
        stand_in: int | None = None
        if args.device.startswith("cpu:"):
            stand_in = _device_index(args.device[4:])
            index = None
        else:
            index = None if args.device == "cpu" else _device_index(args.device)
        if args.memory_limit_mb is not None and not args.memory_limit_mb > 0:
            raise ConfigError(f"--memory-limit-mb: expected a positive number, got {args.memory_limit_mb}")
        from workers.gpu.nvml import device_count

        # NVML, unlike CUDA, is safe to start in the parent before the fork.
        count, why = device_count()
        if index is not None and index >= count:
            found = f"NVML reports {count} GPU(s)" if count else f"no GPU found ({why})"
            raise ConfigError(
                f"--device {index}: {found}; use --device cpu to run a GPU worker on the CPU"
            )
        if index is None:
            # Said once, at start; the heartbeat carries it from then on.
            print(
                "turnout: GPU worker on the CPU: no GPU telemetry "
                f"({why or f'NVML reports {count} GPU(s), none used'})",
                file=sys.stderr,
            )
        pin_device(index)  # before anything imports torch
        spec = gpu_spec(
            index, name=args.name, memory_limit_mb=args.memory_limit_mb, stand_in=stand_in
        )
    else:
        from workers.cpu import cpu_spec, limit_native_threads

        limit_native_threads()
        spec = cpu_spec(concurrency=args.concurrency, name=args.name)
    if args.queues:
        import dataclasses

        from router.routes import check_queue

        try:
            queues = tuple(check_queue(q.strip()) for q in args.queues.split(",") if q.strip())
        except ValueError as exc:
            raise ConfigError(f"--queues: {exc}") from None
        spec = dataclasses.replace(spec, queues=queues)
    from workers.factory import run_worker

    _logging(settings)
    return run_worker(spec, settings, _table(settings))


def _device_index(text: str) -> int:
    if not text.isdigit():
        raise ConfigError(f"--device: expected a GPU index (0, 1, …) or 'cpu', got {text!r}")
    return int(text)


def cmd_routes_check(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.file) if args.file else settings.routes_file
    table = load_routes(path)
    print(f"{path}: {len(table.routes)} model(s), valid")
    print(f"{'model':<16} {'framework':<10} {'version':<8} {'queue':<8} {'fallback':<9} "
          f"{'input':<14} {'limit_s':>7} {'rows':>5} {'batch':>5}")
    for r in table.routes.values():
        shape = f"text<={r.input.max_length}" if r.input.kind == "text" else f"{r.input.width} numbers"
        print(f"{r.name:<16} {r.framework:<10} {r.version:<8} {r.queue:<8} {r.fallback or '-':<9} "
              f"{shape:<14} {r.time_limit_s:>7g} {r.max_rows:>5} {r.max_batch or '-':>5}")
    queues = sorted({q for r in table.routes.values() for q in r.queues} | set(table.queues))
    print("queues: " + ", ".join(f"{q} (max_depth {table.queue_config(q).max_depth})" for q in queues))
    return 0


def cmd_models_build(args: argparse.Namespace, settings: Settings) -> int:
    from ml.artifacts import META_FILE, model_dir
    from ml.build import BUILDERS, build

    table = _table(settings)
    wanted = args.names or [n for n in table.routes if n in BUILDERS]
    status = 0
    for name in wanted:
        route = table.get(name)
        if name not in BUILDERS:
            print(f"turnout: no builder for model {name!r}; known: {', '.join(BUILDERS)}")
            status = 2
            continue
        version = route.version if route else "1"
        folder = route.artifact_dir if route else f"{name}/{version}"
        if args.missing and route and (model_dir(settings.models_dir, route) / META_FILE).exists():
            continue
        built = build(settings.models_dir, name, version, folder)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in built.metrics.items())
        print(f"turnout: built {name} v{version} in {built.seconds:.1f} s ({metrics}) -> {built.folder}")
    return status


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="turnout", description="GPU-aware inference router")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole stack on this machine")
    up.add_argument("--port", type=int, help="API port (default 8000, or TURNOUT_API_PORT)")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.add_argument("--access-log", action="store_true", help="log every request")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a worker")
    worker.add_argument("kind", choices=["cpu", "gpu"])
    worker.add_argument(
        "--device",
        help="gpu: the GPU index to pin to; 'cpu' to run on the CPU; 'cpu:N' to run on "
        "the CPU in device N's place (it consumes gpu.N)",
    )
    worker.add_argument("--concurrency", type=int, help="cpu: pool size (default: cores)")
    worker.add_argument("--name", help="Celery node name (default cpu@host, gpuN@host)")
    worker.add_argument(
        "--queues",
        help="consume these queues (comma-separated) instead of the kind's own: "
        "e.g. a GPU worker that also serves the CPU queue",
    )
    worker.add_argument(
        "--memory-limit-mb",
        type=float,
        help="gpu: the most device memory this worker's models may use; a model that "
        "does not fit is refused, and the allocator enforces the cap",
    )
    worker.set_defaults(func=cmd_worker)

    # Parsed by the benchmark itself (main() hands it the rest of the line).
    sub.add_parser("bench", help="the benchmark script: turnout bench --help", add_help=False)

    routes = sub.add_parser("routes", help="the route table")
    routes_sub = routes.add_subparsers(dest="action", required=True)
    check = routes_sub.add_parser("check", help="validate and print a route table")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_routes_check)

    models = sub.add_parser("models", help="model artifacts")
    models_sub = models.add_subparsers(dest="action", required=True)
    build = models_sub.add_parser("build", help="build the shipped models from bundled data")
    build.add_argument("names", nargs="*", help="models to build (default: all with a builder)")
    build.add_argument("--missing", action="store_true", help="only those not built yet")
    build.set_defaults(func=cmd_models_build)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Imported here: the benchmark pulls in matplotlib and its baselines.
        from benchmarks.run import main as bench_main

        return bench_main(argv[1:])
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        return int(args.func(args, settings))
    except ConfigError as exc:
        print(f"turnout: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
