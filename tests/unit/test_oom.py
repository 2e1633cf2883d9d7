"""Out-of-memory splitting, against a fake model that 'fits' a few rows."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from turnout.ml.adapters.base import Prediction
from turnout.ml.oom import OutOfMemory, is_out_of_memory, predict_splitting


class Fits:
    """Doubles each number; out of memory above ``limit`` rows or on ``poison``."""

    def __init__(self, limit: int, poison: float | None = None, error: type[Exception] = OutOfMemory) -> None:
        self.limit = limit
        self.poison = poison
        self.error = error
        self.calls: list[int] = []

    def predict(self, rows: list[Any]) -> Prediction:
        self.calls.append(len(rows))
        if len(rows) > self.limit or any(r == self.poison for r in rows):
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return Prediction([r * 2 for r in rows], [[float(r)] for r in rows])


def test_a_batch_that_fits_runs_in_one_pass() -> None:
    model = Fits(limit=8)
    out = predict_splitting(model, [1, 2, 3])
    assert out.predictions == [2, 4, 6] and out.probabilities == [[1.0], [2.0], [3.0]]
    assert (out.passes, out.splits, out.failed, model.calls) == (1, 0, {}, [3])


def test_an_oversized_batch_is_halved_until_it_fits_and_keeps_its_order() -> None:
    released = []
    model = Fits(limit=3)
    rows = list(range(10))
    out = predict_splitting(model, rows, release=lambda: released.append(1))
    assert out.predictions == [r * 2 for r in rows]
    assert out.probabilities == [[float(r)] for r in rows]
    assert out.failed == {}
    assert max(n for n in model.calls[1:]) <= 5 and model.calls[0] == 10
    assert out.splits == len(released) and out.splits >= 3


def test_a_row_that_never_fits_fails_alone() -> None:
    model = Fits(limit=4, poison=5)
    out = predict_splitting(model, list(range(8)))
    assert set(out.failed) == {5}
    assert out.failed[5] == "OutOfMemory: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert [p for i, p in enumerate(out.predictions) if i != 5] == [0, 2, 4, 6, 8, 12, 14]
    assert out.predictions[5] is None


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError, MemoryError])
def test_torch_and_runtime_out_of_memory_errors_are_recognised(error: type[Exception]) -> None:
    assert is_out_of_memory(error("CUDA out of memory. Tried to allocate 20.00 MiB"))
    out = predict_splitting(Fits(limit=1, error=error), [1, 2])
    assert out.predictions == [2, 4]


def test_other_errors_are_not_retried() -> None:
    class Broken:
        def predict(self, rows: list[Any]) -> Prediction:
            raise ValueError("bad weights")

    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(ValueError, match="bad weights"):
        predict_splitting(Broken(), [1, 2, 3])
