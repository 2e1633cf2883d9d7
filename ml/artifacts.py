"""Model artifacts on disk: ``models/<name>/<version>/`` holds the artifact file
and ``meta.json`` (framework, input width, classes, sha256 of the artifact).

An artifact is loaded only from inside the models folder and only when its
sha256 matches the metadata: a worker never unpickles a file it cannot vouch for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from turnout.core.errors import ArtifactError
from turnout.core.routes import FRAMEWORKS, Route

META_FILE = "meta.json"


@dataclass(frozen=True)
class ModelMeta:
    name: str
    version: str
    framework: str
    artifact: str  # file name inside the model's folder
    sha256: str
    input: dict[str, Any]
    classes: list[Any] | None = None
    architecture: str | None = None
    architecture_args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Other files the model needs (tokenizer, config), each with its sha256.
    files: dict[str, str] = field(default_factory=dict)
    # Device memory the model is expected to need, when known better than
    # from its size on disk.
    memory_mb: float | None = None
    built_with: dict[str, str] = field(default_factory=dict)
    # Added models (`turnout models add`): the format the file is in, the
    # output schema, the task, what the operator trusted at add, the sample
    # that passed (the warm-up), where it came from and when, and every
    # file's sha256 and size.
    format: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    trusted: dict[str, Any] = field(default_factory=dict)
    sample: list[Any] | None = None
    source: str | None = None
    created_at: float | None = None
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ArtifactError(f"metadata is incomplete: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir(models_dir: Path, route: Route) -> Path:
    """The route's folder, refusing anything that resolves outside ``models_dir``."""
    root = models_dir.resolve()
    folder = (root / route.artifact_dir).resolve()
    if not folder.is_relative_to(root):
        raise ArtifactError(f"model {route.name!r}: {route.artifact_dir} is outside {root}")
    return folder


def read_meta(models_dir: Path, route: Route) -> tuple[Path, ModelMeta]:
    folder = model_dir(models_dir, route)
    meta_path = folder / META_FILE
    try:
        data = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"model {route.name!r}: no {META_FILE} in {folder}; run `turnout models build`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"model {route.name!r}: cannot read {meta_path}: {exc}") from None
    return folder, ModelMeta.from_dict(data)


def verify(models_dir: Path, route: Route) -> tuple[Path, ModelMeta]:
    """Check that the route's artifact exists, matches the route and its checksum.

    Returns the artifact's path and metadata; raises ``ArtifactError`` naming
    the model and what is wrong.
    """
    folder, meta = read_meta(models_dir, route)
    if route.framework in FRAMEWORKS and meta.framework != route.framework:
        raise ArtifactError(
            f"model {route.name!r}: the route says framework {route.framework!r}, "
            f"the artifact was built with {meta.framework!r}"
        )
    # An added version carries its own input schema (a version may add a
    # column); a built one must fit the route's.
    mismatch = None if meta.format else route.input.mismatch(route.name, meta.input)
    if mismatch is not None:
        raise ArtifactError(mismatch)
    path = (folder / meta.artifact).resolve()
    if not path.is_relative_to(folder):
        raise ArtifactError(f"model {route.name!r}: artifact {meta.artifact!r} leaves {folder}")
    if not (path.is_file() or (meta.format and path.is_dir())):
        raise ArtifactError(f"model {route.name!r}: artifact {path} is missing")
    if meta.sha256:
        _check_sha(route, path, meta.sha256)
    files = {**meta.files, **{n: e["sha256"] for n, e in meta.manifest.items()}}
    for name, digest in sorted(files.items()):
        extra = (folder / name).resolve()
        if not extra.is_relative_to(folder):
            raise ArtifactError(f"model {route.name!r}: file {name!r} leaves {folder}")
        if not extra.is_file():
            raise ArtifactError(f"model {route.name!r}: file {extra} is missing")
        _check_sha(route, extra, digest)
    return path, meta


def _check_sha(route: Route, path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"model {route.name!r}: {path} has sha256 {actual[:12]}…, the metadata says "
            f"{expected[:12]}…; refusing to load it"
        )
