"""Misbehaving models for the fault scenarios, each wrapping the digits net.

``framework: benchmarks.chaos.adapters:<Class>`` in the chaos route table;
options say how each misbehaves.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from turnout.ml.adapters.base import Prediction
from turnout.ml.adapters.torch import TorchAdapter
from turnout.ml.artifacts import ModelMeta


class _Wrapped:
    def __init__(self, inner: Any, options: dict[str, Any]) -> None:
        self.inner = inner
        self.sleep_s = float(options.get("sleep_s", 0))
        self.stubborn = bool(options.get("stubborn", False))
        self.poison = options.get("poison")
        self.calls = 0

    def predict(self, rows: list[Any]) -> Prediction:
        self.calls += 1
        if self.calls == 1:  # the worker's warm-up pass at load: behave
            return self.inner.predict(rows)
        if self.poison is not None and any(r and r[0] == self.poison for r in rows):
            # As a segfault or the kernel's OOM killer would: no exception, no goodbye.
            os.kill(os.getpid(), signal.SIGKILL)
        deadline = time.monotonic() + self.sleep_s
        while time.monotonic() < deadline:
            try:
                time.sleep(max(0.0, deadline - time.monotonic()))
            except Exception:  # the soft time limit, ignored on purpose
                if not self.stubborn:
                    raise
        prediction: Prediction = self.inner.predict(rows)
        return prediction


class ChaosTorchAdapter:
    """Options: ``sleep_s`` per pass; ``stubborn`` (ignore the soft time
    limit: only the hard one stops it); ``poison`` (a first value that kills
    the process running it)."""

    def load(self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]) -> _Wrapped:
        return _Wrapped(TorchAdapter().load(path, meta, device, options), options)
