"""Each version's own input schema: an added version's ``meta.json`` carries
it (so a version with a new column can roll out), and a request is checked
against the version that will serve it. A built version, or one whose folder
this machine cannot read, takes the route's ``input``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from turnout.core.catalog import META_FILE, at_version, check_version, require_version
from turnout.core.errors import TurnoutError
from turnout.core.inputs import Image, InputKind, parse_schema
from turnout.core.routes import Route

log = logging.getLogger(__name__)


class VersionSchemas:
    def __init__(self, models_dir: Path) -> None:
        self._root = models_dir
        # (model, version) -> its schema, or None for "the route's". Versions
        # are never rewritten in place, so an entry never goes stale.
        self._known: dict[tuple[str, str], InputKind | None] = {}
        self._metas: dict[tuple[str, str], dict[str, Any]] = {}

    def meta(self, route: Route, version: str) -> dict[str, Any]:
        """The version's ``meta.json`` (read once: v2 answers from it on every
        request); ``UnknownVersion`` for a version that does not exist."""
        key = (route.name, version)
        if key not in self._metas:
            self._metas[key] = require_version(self._root, route, version).meta
        return self._metas[key]

    def input(self, route: Route, version: str) -> InputKind:
        if isinstance(route.input, Image):
            # An image route over any version: the image kind makes the
            # tensor the version takes (decoded in the worker), so its own
            # schema stays the one requests are checked against.
            return route.input
        key = (route.name, version)
        if key not in self._known:
            found = self._read(route, version)
            if found is False:
                return route.input  # not readable here (yet): not remembered
            self._known[key] = found
        return self._known[key] or route.input

    def _read(self, route: Route, version: str) -> InputKind | None | Literal[False]:
        try:
            folder = self._root / at_version(route, check_version(version)).artifact_dir
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError, TurnoutError):
            return False  # unreadable here, or not a version name at all
        if not isinstance(meta, dict) or not meta.get("format"):
            return None
        try:
            return parse_schema(meta.get("input"))
        except ValueError as exc:
            log.error("model %s version %s: meta.json's input schema is bad (%s); the "
                      "route's is used", route.name, version, exc)
            return None
