"""Model versions on disk: ``models/<name>/<version>/`` each hold an artifact
and its ``meta.json``. This module reads only the JSON, so the router can list
versions without loading (or importing) any model.

A folder whose name starts with a dot is a version being written (training
writes into ``.incoming-…`` and renames it into place when complete): it is
never listed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from turnout.core.errors import UnknownVersion
from turnout.core.routes import Route

META_FILE = "meta.json"
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,31}$")


@dataclass(frozen=True)
class VersionInfo:
    version: str
    folder: Path
    meta: dict[str, Any]
    created_at: float

    def describe(self) -> dict[str, Any]:
        """What the API shows of a version (the artifact's own fields aside)."""
        out: dict[str, Any] = {
            "version": self.version,
            "metrics": self.meta.get("metrics") or {},
            "params": self.meta.get("params") or {},
            "created_at": self.created_at,
        }
        for key in ("seed", "dataset", "trials", "code_version", "training_job", "format",
                    "framework", "task", "input", "output", "built_with", "source"):
            if self.meta.get(key) is not None:
                out[key] = self.meta[key]
        return out


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise UnknownVersion(
            f"version {version!r}: versions are letters, digits, '.', '_' or '-' (up to 32)"
        )
    return version


def sort_key(version: str) -> tuple[int, int, str]:
    """Numbers in numeric order, then names."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def at_version(route: Route, version: str) -> Route:
    """The route as it would serve ``version``: a version other than the
    route's own lives in ``<name>/<version>``, whatever ``artifact:`` says."""
    if version == route.version:
        return route
    return route.model_copy(update={"version": version, "artifact": None})


def version_folder(models_dir: Path, route: Route, version: str) -> Path:
    root = models_dir.resolve()
    folder = (root / at_version(route, check_version(version)).artifact_dir).resolve()
    if not folder.is_relative_to(root):
        raise UnknownVersion(f"model {route.name!r}: version {version!r} is outside {root}")
    return folder


def read_version(models_dir: Path, route: Route, version: str) -> VersionInfo | None:
    folder = version_folder(models_dir, route, version)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
        created = meta_path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    return VersionInfo(version, folder, meta, float(meta.get("created_at") or created))


def list_versions(models_dir: Path, route: Route) -> list[VersionInfo]:
    """Every complete version of the route's model, oldest number first."""
    names = {route.version}
    base = models_dir / route.name
    if base.is_dir():
        names.update(
            p.name for p in base.iterdir()
            if p.is_dir() and not p.name.startswith(".") and VERSION_RE.match(p.name)
        )
    found = (read_version(models_dir, route, v) for v in names)
    return sorted((v for v in found if v is not None), key=lambda v: sort_key(v.version))


def require_version(models_dir: Path, route: Route, version: str) -> VersionInfo:
    info = read_version(models_dir, route, check_version(version))
    if info is None:
        known = ", ".join(v.version for v in list_versions(models_dir, route)) or "none"
        raise UnknownVersion(
            f"model {route.name!r} has no version {version!r}; versions: {known}"
        )
    return info


def next_version(models_dir: Path, route: Route) -> str:
    """One more than the highest number taken by any folder of the model
    (complete or not, hidden ones aside) or by the route's own version."""
    base = models_dir / route.name
    taken = {route.version} | ({p.name for p in base.iterdir()} if base.is_dir() else set())
    return str(max((int(n) for n in taken if n.isdigit()), default=0) + 1)
