"""Model versions for tests, made from the built ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def add_version(models: Path, name: str, version: str, source: str, **meta_changes: Any) -> Path:
    """A copy of ``models/source`` as ``name`` version ``version``."""
    folder = models / name / version
    shutil.copytree(models / source, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(version=version, **meta_changes)
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder
