"""A framework adapter for tests: the digits net, but slow, so that a test can
act on a job while it runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ml.adapters.base import Prediction
from ml.adapters.torch import TorchAdapter
from ml.artifacts import ModelMeta


class _Slow:
    def __init__(self, inner: Any, sleep_s: float) -> None:
        self.inner = inner
        self.sleep_s = sleep_s

    def predict(self, rows: list[Any]) -> Prediction:
        time.sleep(self.sleep_s)
        prediction: Prediction = self.inner.predict(rows)
        return prediction


class SlowTorchAdapter:
    """Options: ``sleep_s`` per batch; ``load_sleep_s`` at load. When
    TURNOUT_TEST_LOAD_LOG names a file, each load appends the time it ended."""

    def load(self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]) -> _Slow:
        model = _Slow(TorchAdapter().load(path, meta, device, options), float(options.get("sleep_s", 2)))
        time.sleep(float(options.get("load_sleep_s", 0)))
        log = os.environ.get("TURNOUT_TEST_LOAD_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"{time.time()}\n")
        return model
