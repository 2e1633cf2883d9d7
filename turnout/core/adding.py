"""Adding a model of the operator's own: ``turnout models add`` and
``POST /v1/models/{name}/versions`` both come here.

One step does it all: recognise the format (``turnout.core.formats``), copy
the file or folder into ``<models>/<name>/.incoming-…`` hashing every file,
load the copy **in a throwaway process** (``turnout.ml.inspect``: a pickle
runs code when loaded, and this process never loads a model) to read the
schemas and run a sample, write ``meta.json``, and rename the folder into
place as the next version. The first version of a new model also gets its
route, ``<models>/<name>/route.yaml``, which the table in force composes with
the operator's file (``turnout.core.routes.compose``). Any failure leaves
nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from turnout.core.catalog import META_FILE, VERSION_RE, sort_key
from turnout.core.errors import MissingRuntime, ModelNotAdded, PickleRefused
from turnout.core.formats import FORMATS, Detected, detect
from turnout.core.routes import ADDED_ROUTE, RouteTable
from turnout.core.routes.schema import MODEL_NAME_RE, check_queue

# Called with (bytes done, bytes in all) while files are copied and hashed.
Progress = Callable[[int, int], None]
_CHUNK = 1 << 20
# Rows per micro-batch an added model's route starts with.
_BATCH = {"cpu": (256, 2.0), "gpu": (64, 5.0)}


@dataclass
class AddOptions:
    framework: str | None = None
    queue: str | None = None
    task: str | None = None
    # {"inputs": [...]}: the rows to smoke-test with (and to read shapes from).
    sample: list[Any] | None = None
    trust_pickle: bool = False
    trust_types: list[str] = field(default_factory=list)
    version: str | None = None


@dataclass(frozen=True)
class Added:
    model: str
    version: str
    framework: str
    format: str
    input: dict[str, Any]
    output: dict[str, Any]
    # True when this version serves at once (a new model's first version).
    serving: bool
    folder: Path
    warnings: list[str]
    answer: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "framework": self.framework,
                "format": self.format, "input": self.input, "output": self.output,
                "serving": self.serving, "warnings": self.warnings}


def add_model(
    models_dir: Path, table: RouteTable, name: str, source: Path, options: AddOptions,
    timeout_s: float = 600.0, progress: Progress | None = None,
) -> Added:
    """Add ``source`` as the next version of model ``name``; ``ModelNotAdded``
    (or ``PickleRefused``, ``MissingRuntime``) naming why, leaving nothing."""
    if not MODEL_NAME_RE.match(name):
        raise ModelNotAdded(f"model name {name!r}: use lower-case letters, digits, '.', '_' "
                            "or '-' (up to 64), starting with a letter or digit")
    if not source.exists():
        raise ModelNotAdded(f"{source}: no such file or folder")
    if options.queue is not None:
        try:
            check_queue(options.queue)
        except ValueError as exc:
            raise ModelNotAdded(f"--queue: {exc}") from None
    found = detect(source, options.framework)
    fmt = found.format
    if fmt.pickle and not options.trust_pickle:
        raise PickleRefused(
            f"{source.name} is a pickle ({fmt.name}), and loading a pickle runs whatever code "
            "it holds. Save the model with skops instead (skops.io.dump(model, "
            "'model.skops')), or, if you trust who made the file, pass --trust-pickle "
            "(TURNOUT_TRUST_PICKLE=1 for uploads)")
    missing = [m for m in fmt.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingRuntime(
            f"{fmt.name} models need {', '.join(missing)}, which is not installed here: "
            f"pip install 'turnout[{fmt.extra}]'")
    route = table.get(name)
    if route is not None and route.framework != fmt.framework:
        raise ModelNotAdded(
            f"model {name!r} is served as {route.framework}; a {fmt.name} version cannot roll "
            "out under its route. Add it under another name")
    existing = _versions(models_dir / name)
    version = _choose_version(name, options.version, existing, route)
    base = models_dir / name
    created = not base.exists()
    base.mkdir(parents=True, exist_ok=True)
    incoming = base / f".incoming-{uuid.uuid4().hex[:12]}"
    added = False
    try:
        manifest = copy_hashed(source, incoming, progress)
        meta = _meta(name, version, found, manifest, options)
        report = _inspect(name, incoming, meta, options.sample, timeout_s)
        meta.update(input=report["input"], output=report["output"], sample=report["sample"],
                    built_with=report["libraries"], task=report.get("task") or meta.get("task"))
        (incoming / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        target = base / version
        try:
            os.rename(incoming, target)
        except OSError:
            raise ModelNotAdded(f"model {name!r}: version {version} was added meanwhile; "
                                "add again for the next one") from None
        added = True
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
        if created and not added:
            # A new model's folder, if nothing else is in it now (another
            # add of the same name may be writing beside this one).
            with contextlib.suppress(OSError):
                base.rmdir()
    new_model = route is None and not (base / ADDED_ROUTE).exists()
    if new_model:
        write_route(base / ADDED_ROUTE, _route(fmt.name, version, options.queue, report["input"]))
    return Added(name, version, fmt.framework, fmt.name, report["input"], report["output"],
                 new_model, target, list(report.get("warnings") or []), report["answer"])


def _choose_version(name: str, asked: str | None, existing: list[str], route: Any) -> str:
    if asked is not None:
        if not VERSION_RE.match(asked):
            raise ModelNotAdded(f"--version {asked!r}: versions are letters, digits, '.', '_' "
                                "or '-' (up to 32)")
        if asked in existing:
            raise ModelNotAdded(f"model {name!r} already has a version {asked}; versions are "
                                "never overwritten")
        return asked
    taken = set(existing) | ({route.version} if route is not None else set())
    return str(max((int(v) for v in taken if v.isdigit()), default=0) + 1)


def _versions(base: Path) -> list[str]:
    if not base.is_dir():
        return []
    return sorted((p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=sort_key)


def _meta(name: str, version: str, found: Detected, manifest: dict[str, dict[str, Any]],
          options: AddOptions) -> dict[str, Any]:
    main = found.main
    if main not in manifest:
        raise ModelNotAdded(f"{main}: the model's file is missing from what was added")
    trusted: dict[str, Any] = {}
    if found.format.pickle:
        trusted["pickle"] = True
    if options.trust_types:
        trusted["types"] = sorted(set(options.trust_types))
    return {
        "name": name, "version": version, "framework": found.format.framework,
        "format": found.format.name, "artifact": main, "sha256": manifest[main]["sha256"],
        "manifest": manifest, "input": found.input or {}, "task": options.task or found.task,
        "trusted": trusted, "source": found.source, "created_at": time.time(),
        "notes": found.notes,
    }


def _inspect(name: str, folder: Path, meta: dict[str, Any], sample: list[Any] | None,
             timeout_s: float) -> dict[str, Any]:
    request = {"name": name, "folder": str(folder), "meta": meta, "sample": sample}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        done = subprocess.run([sys.executable, "-m", "turnout.ml.inspect"],
                              input=json.dumps(request, default=str), capture_output=True,
                              text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelNotAdded(f"model {name!r}: loading it took over {timeout_s:g} s") from None
    try:
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ModelNotAdded(f"model {name!r}: the loader died: {tail[0]}") from None
    if "error" in report:
        raise ModelNotAdded(f"model {name!r} ({meta['format']}): {report['error']}")
    return report


def _route(fmt: str, version: str, queue: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    f = FORMATS[fmt]
    queue = queue or f.queue
    route: dict[str, Any] = {"framework": f.framework, "version": version, "queue": queue}
    if queue == f.queue and f.fallback:
        route["fallback"] = f.fallback
    kind = "gpu" if queue.startswith("gpu") else "cpu"
    route["max_batch"], route["max_delay_ms"] = _BATCH[kind]
    route["input"] = schema
    return route


def move_route_version(models_dir: Path, name: str, version: str) -> bool:
    """Point an added model's route at ``version``; False when the model has
    no added route (the operator's file names its version)."""
    path = models_dir / name / ADDED_ROUTE
    try:
        route = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(route, dict):
        return False
    write_route(path, {**route, "version": version})
    return True


def write_route(path: Path, route: dict[str, Any]) -> None:
    """The added model's route, written whole or not at all."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text("# Written by `turnout models add`; configs/routes.yaml overrides any key.\n"
                   + yaml.safe_dump(route, sort_keys=False))
    os.replace(tmp, path)


def copy_hashed(source: Path, target: Path, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Copy a file, or a folder's files, into ``target`` (new), hashing as it
    goes: {relative path: {"sha256", "size"}}. Links are refused (a link could
    point anywhere), as are names that start with a dot."""
    files: list[tuple[Path, str]] = []
    if source.is_file():
        files.append((source, source.name))
    else:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            if path.is_symlink():
                raise ModelNotAdded(f"{rel}: a link; add the file it points to instead")
            if path.is_file() and not any(part.startswith(".") for part in Path(rel).parts):
                files.append((path, rel))
    if not files:
        raise ModelNotAdded(f"{source}: no files to add")
    total = sum(p.stat().st_size for p, _ in files)
    done = 0
    target.mkdir(parents=True)
    manifest: dict[str, dict[str, Any]] = {}
    for path, rel in files:
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with path.open("rb") as src, out.open("wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        manifest[rel] = {"sha256": digest.hexdigest(), "size": path.stat().st_size}
    return manifest


def verify_version(folder: Path) -> list[str]:
    """What is wrong with a version's files against its ``meta.json``'s
    manifest (re-hashed): an empty list when every file matches."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        return [f"{META_FILE}: {exc}"]
    entries = dict(meta.get("manifest") or {})
    if not entries and meta.get("artifact") and meta.get("sha256"):
        entries = {meta["artifact"]: {"sha256": meta["sha256"]}}
        entries.update({n: {"sha256": d} for n, d in (meta.get("files") or {}).items()})
    problems = []
    for rel, entry in sorted(entries.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry["sha256"]:
            problems.append(f"{rel}: sha256 {digest.hexdigest()[:12]}…, meta.json says "
                            f"{entry['sha256'][:12]}…")
        elif "size" in entry and path.stat().st_size != entry["size"]:
            problems.append(f"{rel}: {path.stat().st_size} bytes, meta.json says {entry['size']}")
    return problems
