"""GPU telemetry: finding the device by UUID, and degrading without NVML."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from turnout.workers.gpu.nvml import (
    DeviceTelemetry,
    NvmlUnavailable,
    PyNvml,
    device_count,
    normalize_uuid,
)


class FakeNvml:
    """Our NvmlBackend, as NVML would answer on a two-GPU machine."""

    def __init__(self, fail_start: str | None = None) -> None:
        self.fail_start = fail_start
        self.uuids = ["GPU-aaaa-0000", "GPU-bbbb-1111"]
        self.used = [1000.0, 30_000.0]

    def start(self) -> None:
        if self.fail_start:
            raise NvmlUnavailable(self.fail_start)

    def count(self) -> int:
        return len(self.uuids)

    def handle(self, index: int) -> int:
        return index

    def uuid(self, handle: int) -> str:
        return self.uuids[handle]

    def read(self, handle: int) -> dict[str, Any]:
        return {
            "index": handle,
            "name": "NVIDIA H100 80GB HBM3",
            "memory_used_mb": self.used[handle],
            "memory_total_mb": 81_559.0,
            "memory_free_mb": 81_559.0 - self.used[handle],
            "utilization_pct": 7,
            "temperature_c": 41,
            "power_w": 120.5,
        }


def test_uuids_compare_without_nvmls_prefix() -> None:
    assert normalize_uuid("GPU-ABCD-12") == normalize_uuid("abcd-12") == "abcd-12"


def test_the_device_is_found_by_uuid_not_by_index() -> None:
    # CUDA_VISIBLE_DEVICES=1 makes it cuda:0 for torch; NVML still calls it 1.
    telemetry = DeviceTelemetry(FakeNvml())
    figures = telemetry.read("bbbb-1111")
    assert figures is not None
    assert figures["index"] == 1 and figures["uuid"] == "GPU-bbbb-1111"
    assert figures["memory_used_mb"] == 30_000.0
    assert telemetry.status == "ok"


def test_an_unknown_uuid_is_reported_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = DeviceTelemetry(FakeNvml())
    assert telemetry.read("cccc-2222") is None
    assert telemetry.status == "unavailable: NVML reports no device with UUID GPU-cccc-2222"


def test_without_nvml_it_says_so_once_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = DeviceTelemetry(FakeNvml(fail_start="NVML could not start: Driver Not Loaded"))
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert telemetry.read("aaaa-0000") is None
    warnings = [r for r in caplog.records if "GPU telemetry unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "Driver Not Loaded" in warnings[0].getMessage()
    assert telemetry.status == "unavailable: NVML could not start: Driver Not Loaded"


def test_device_count_degrades_to_zero_with_a_reason() -> None:
    assert device_count(FakeNvml()) == (2, None)
    count, why = device_count(FakeNvml(fail_start="no library"))
    assert (count, why) == (0, "no library")


def test_the_real_nvml_on_a_machine_without_a_driver() -> None:
    count, why = device_count(PyNvml())
    if count:
        pytest.skip("this machine has an NVIDIA driver")
    assert why and ("NVML" in why or "nvidia-ml-py" in why)
    telemetry = DeviceTelemetry(PyNvml())
    assert telemetry.read("aaaa") is None and telemetry.status.startswith("unavailable: ")
