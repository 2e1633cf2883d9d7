"""A framework adapter for tests: the digits net, but slow, so that a test can
act on a job while it runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from turnout.ml.adapters.base import Prediction
from turnout.ml.adapters.torch import TorchAdapter
from turnout.ml.artifacts import ModelMeta


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


class _Oom:
    """Raises torch's own out-of-memory error the way CUDA would: for batches
    larger than ``fits_rows``, and for any batch holding a row that starts
    with ``poison``. Each forward pass's size is appended to ``calls``."""

    def __init__(self, inner: Any, fits_rows: int, poison: float | None) -> None:
        self.inner = inner
        self.fits_rows = fits_rows
        self.poison = poison
        self.calls: list[int] = []

    def predict(self, rows: list[Any]) -> Prediction:
        import torch

        self.calls.append(len(rows))
        if len(rows) > self.fits_rows or any(r[0] == self.poison for r in rows):
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(rows) * 512} MiB (injected)"
            )
        prediction: Prediction = self.inner.predict(rows)
        return prediction


class OomTorchAdapter:
    """Options: ``fits_rows`` (default 4), ``poison`` (a first value that never fits)."""

    def load(self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]) -> _Oom:
        poison = options.get("poison")
        return _Oom(
            TorchAdapter().load(path, meta, device, options),
            int(options.get("fits_rows", 4)),
            None if poison is None else float(poison),
        )


class _Picky:
    """The digits net, after ``sleep_s``; a batch holding a row that starts with
    ``poison`` raises ValueError, as a model would on input it cannot take."""

    def __init__(self, inner: Any, sleep_s: float, poison: float) -> None:
        self.inner = inner
        self.sleep_s = sleep_s
        self.poison = poison

    def predict(self, rows: list[Any]) -> Prediction:
        time.sleep(self.sleep_s)
        if any(r[0] == self.poison for r in rows):
            raise ValueError(f"a row starts with {self.poison:g}, which this model cannot take")
        prediction: Prediction = self.inner.predict(rows)
        return prediction


class PickyTorchAdapter:
    """Options: ``sleep_s`` per pass (default 0.2), ``poison`` (default 777)."""

    def load(self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]) -> _Picky:
        inner = TorchAdapter().load(path, meta, device, options)
        return _Picky(inner, float(options.get("sleep_s", 0.2)), float(options.get("poison", 777)))


class SlowLoadSklearnAdapter:
    """scikit-learn, but a version whose metadata says ``architecture_args:
    {load_sleep_s: N}`` takes N seconds to load: a rollout a test can watch."""

    def load(self, path: Path, meta: ModelMeta, device: str, options: dict[str, Any]) -> Any:
        from turnout.ml.adapters.sklearn import SklearnAdapter

        time.sleep(float(meta.architecture_args.get("load_sleep_s", 0)))
        return SklearnAdapter().load(path, meta, device, options)
