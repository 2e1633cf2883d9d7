"""``turnout models add | list | show | verify | remove``: the operator's own
models (``turnout.core.adding`` does the work; these parse and print)."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from turnout.cli.context import Context, pass_context
from turnout.core import broker
from turnout.core.errors import ModelNotAdded, TurnoutError


def read_sample(path: Path) -> list[Any]:
    """The rows of a ``--sample`` file, ``{"inputs": [...]}``."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotAdded(f"--sample {path}: not a JSON file ({exc})") from None
    rows = doc.get("inputs") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ModelNotAdded(f'--sample {path}: expected {{"inputs": [row, ...]}} with a row')
    return rows


def _progress() -> Any:
    """A progress bar for copying and hashing, on a terminal only."""
    if not sys.stderr.isatty():
        return nullcontext(None)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    return Progress("copying and hashing", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                    transient=True)


def add_command(models: click.Group) -> None:
    @models.command("add")
    @click.argument("name")
    @click.argument("path", type=click.Path(exists=True, path_type=Path))
    @click.option("--framework", help="The format, when it cannot be told from the file: skops, "
                  "joblib, onnx, torchscript, torch-export, huggingface, xgboost, lightgbm, "
                  "mlflow.")
    @click.option("--queue", help="cpu, gpu or gpu.<i>; by default cpu for scikit-learn and "
                  "boosted trees, gpu (falling back to cpu) for the rest.")
    @click.option("--task", help="A Hugging Face model's task: text-classification, "
                  "token-classification or feature-extraction.")
    @click.option("--sample", type=click.Path(exists=True, path_type=Path),
                  help='A JSON file {"inputs": [...]} to smoke-test with (TorchScript needs it).')
    @click.option("--trust-pickle", is_flag=True,
                  help="Load a joblib/pickle file (it runs code when loaded).")
    @click.option("--trust-type", "trust_types", multiple=True,
                  help="A type the .skops file holds that skops does not trust by default.")
    @click.option("--version", help="The version's name; the next number by default.")
    @pass_context
    def models_add(
        ctx: Context, name: str, path: Path, framework: str | None, queue: str | None,
        task: str | None, sample: Path | None, trust_pickle: bool, trust_types: tuple[str, ...],
        version: str | None,
    ) -> int:
        """Add the model at PATH (a file or folder) as the next version of NAME.

        Loads it in a throwaway process, infers its schemas, runs a sample,
        hashes every file and writes the version. A new model serves at once on
        every running machine; a later version serves once promoted.
        """
        from turnout.core.adding import AddOptions, add_model

        settings = ctx.settings()
        options = AddOptions(
            framework=framework, queue=queue, task=task,
            sample=read_sample(sample) if sample else None,
            trust_pickle=trust_pickle or settings.trust_pickle,
            trust_types=[*trust_types, *filter(None, settings.trusted_types.split(","))],
            version=version)
        with _progress() as bar:
            job = bar.add_task("copy", total=None) if bar is not None else None

            def progress(done: int, total: int) -> None:
                if bar is not None:
                    bar.update(job, completed=done, total=total)

            added = add_model(settings.models_dir, ctx.table(), name, path, options,
                              settings.add_timeout_s, progress)
        for warning in added.warnings:
            click.echo(f"turnout: warning: {warning}", err=True)
        shape = _shape(added.input)
        click.echo(f"turnout: added {name} v{added.version} ({added.format}, {shape}) "
                   f"-> {added.folder}")
        if not added.serving:
            click.echo(f"turnout: it serves once promoted: turnout models promote {name} "
                       f"{added.version}")
            return 0
        return _publish(ctx, name)

    @models.command("list")
    @pass_context
    def models_list(ctx: Context) -> int:
        """The models in force, their formats, versions and queues."""
        from turnout.core.catalog import list_versions

        settings = ctx.settings()
        table = ctx.table()
        click.echo(f"{'model':<18} {'format':<13} {'version':<8} {'versions':<12} {'queue':<10} "
                   "input")
        for route in table.routes.values():
            versions = list_versions(settings.models_dir, route)
            own = next((v for v in versions if v.version == route.version), None)
            fmt = (own.meta.get("format") if own else None) or route.framework
            names = ",".join(v.version for v in versions) or "-"
            queue = route.queue + (f"→{route.fallback}" if route.fallback else "")
            click.echo(f"{route.name:<18} {fmt:<13} {route.version:<8} {names:<12} "
                       f"{queue:<10} {route.input.summary()}")
        return 0

    @models.command("show")
    @click.argument("name")
    @pass_context
    def models_show(ctx: Context, name: str) -> int:
        """A model's versions: format, schemas, files, and where it serves."""
        from turnout.core.catalog import list_versions

        settings = ctx.settings()
        route = ctx.table().require(name)
        serving = _serving(ctx).get(name)
        default = serving.default_for(route) if serving else route.version
        click.echo(f"{name}: {route.framework} on {route.queue}"
                   + (f" (fallback {route.fallback})" if route.fallback else "")
                   + f"; default version {default}")
        for info in list_versions(settings.models_dir, route):
            meta = info.meta
            files = meta.get("manifest") or {}
            size = sum(int(f.get("size", 0)) for f in files.values())
            mark = " (default)" if info.version == default else ""
            click.echo(f"  v{info.version}{mark}: {meta.get('format') or meta.get('framework')}"
                       + (f", {len(files)} files, {size / 1e6:.2f} MB" if files else ""))
            click.echo(f"    input:  {json.dumps(meta.get('input') or route.input.describe())}")
            if meta.get("output"):
                click.echo(f"    output: {json.dumps(meta['output'])}")
            if meta.get("built_with"):
                click.echo("    with:   " + ", ".join(f"{k} {v}"
                                                     for k, v in meta["built_with"].items()))
        return 0

    @models.command("verify")
    @click.argument("name", required=False)
    @pass_context
    def models_verify(ctx: Context, name: str | None) -> int:
        """Re-hash every file of every version (of NAME) against its meta.json."""
        from turnout.core.adding import verify_version
        from turnout.core.catalog import list_versions

        settings = ctx.settings()
        table = ctx.table()
        routes = [table.require(name)] if name else list(table.routes.values())
        bad = 0
        for route in routes:
            for info in list_versions(settings.models_dir, route):
                problems = verify_version(info.folder)
                bad += bool(problems)
                state = "ok" if not problems else "; ".join(problems)
                click.echo(f"{route.name} v{info.version}: {state}")
        return 1 if bad else 0

    @models.command("remove")
    @click.argument("name")
    @click.argument("version")
    @pass_context
    def models_remove(ctx: Context, name: str, version: str) -> int:
        """Delete VERSION of NAME; refused for a version that serves."""
        from turnout.core.catalog import require_version

        settings = ctx.settings()
        route = ctx.table().require(name)
        info = require_version(settings.models_dir, route, version)
        serving = _serving(ctx).get(name)
        wanted = serving.wanted(route) if serving else {route.version}
        if version in wanted:
            raise TurnoutError(f"{name} v{version} serves (the default, a canary or a "
                               "rollout); promote another version first")
        if version == route.version:
            # The route's own version is the default whenever the serving
            # document is gone: an added model's route moves to the default
            # in force; the operator's file is the operator's to change.
            from turnout.core.adding import move_route_version

            assert serving is not None  # else `wanted` held route.version
            if not move_route_version(settings.models_dir, name, serving.default_for(route)):
                raise TurnoutError(f"{name} v{version} is the version {settings.routes_file} "
                                   "names; change it there first")
            _publish(ctx, name)
        gone = info.folder.with_name(f".removing-{version}-{uuid.uuid4().hex[:8]}")
        info.folder.rename(gone)  # out of every listing at once, then deleted
        shutil.rmtree(gone, ignore_errors=True)
        click.echo(f"turnout: removed {name} v{version}")
        return 0


def _shape(schema: dict[str, Any]) -> str:
    from turnout.core.inputs import parse_schema

    return parse_schema(schema).summary()


def _serving(ctx: Context) -> dict[str, Any]:
    """The serving documents, where a stack is reachable; none otherwise."""
    import redis

    from turnout.core import redis_keys
    from turnout.core.serving import parse_all

    try:
        client = broker.connect(ctx.settings().redis(), socket_timeout=2,
                                      socket_connect_timeout=2)
        try:
            return parse_all(client.hgetall(redis_keys.SERVING))
        finally:
            client.close()
    except (redis.RedisError, OSError, TurnoutError):
        return {}


def _publish(ctx: Context, name: str) -> int:
    """Put the table with the new model in force on every running machine."""
    import redis

    from turnout.core.routes import shared

    settings = ctx.settings()
    try:
        where = settings.redis()
    except TurnoutError:
        click.echo(f"turnout: no stack is running; {name} serves when one starts")
        return 0
    try:
        client = broker.connect(where, socket_timeout=5, socket_connect_timeout=2)
        try:
            generation, _ = shared.publish(client, settings.routes_file, settings.models_dir)
        finally:
            client.close()
    except (redis.RedisError, OSError):
        click.echo(f"turnout: no stack is running; {name} serves when one starts")
        return 0
    click.echo(f"turnout: {name} in the route table in force (generation {generation}); it "
               "serves once a worker has loaded it")
    return 0
