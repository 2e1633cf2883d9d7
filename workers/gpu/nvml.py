"""What NVML says about the machine's GPUs. Degrades to "none" without a driver.

NVML numbers devices on its own and ignores ``CUDA_VISIBLE_DEVICES``, so a
worker finds its device by the UUID that torch reports for ``cuda:0``, never
by index. Every NVML call goes through ``NvmlBackend``, so the logic here can
be tested without a GPU.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

MIB = 1024 * 1024


class NvmlUnavailable(Exception):
    """NVML cannot be used: no library, no driver, or no such device."""


def normalize_uuid(uuid: str) -> str:
    """NVML says ``GPU-1a2b…``, torch says ``1a2b…``: compare them bare."""
    text = uuid.strip().lower()
    return text.removeprefix("gpu-")


class NvmlBackend(Protocol):
    def start(self) -> None: ...
    def count(self) -> int: ...
    def handle(self, index: int) -> Any: ...
    def uuid(self, handle: Any) -> str: ...
    def read(self, handle: Any) -> dict[str, Any]: ...


class PyNvml:
    """The real NVML, through nvidia-ml-py."""

    def __init__(self) -> None:
        self._nvml: Any = None

    def start(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc})") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML could not start: {exc}") from None
        self._nvml = pynvml

    def count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def handle(self, index: int) -> Any:
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def uuid(self, handle: Any) -> str:
        return _text(self._call("nvmlDeviceGetUUID", handle))

    def read(self, handle: Any) -> dict[str, Any]:
        memory = self._call("nvmlDeviceGetMemoryInfo", handle)
        out: dict[str, Any] = {
            "index": int(self._call("nvmlDeviceGetIndex", handle)),
            "name": _text(self._call("nvmlDeviceGetName", handle)),
            "memory_used_mb": round(memory.used / MIB, 1),
            "memory_total_mb": round(memory.total / MIB, 1),
            "memory_free_mb": round(memory.free / MIB, 1),
        }
        # Not every board reports every figure (power on some, temperature on
        # MIG slices): a missing one is None, not a failed heartbeat.
        util = self._optional("nvmlDeviceGetUtilizationRates", handle)
        out["utilization_pct"] = None if util is None else int(util.gpu)
        out["memory_utilization_pct"] = None if util is None else int(util.memory)
        temp = self._optional("nvmlDeviceGetTemperature", handle, 0)  # NVML_TEMPERATURE_GPU
        out["temperature_c"] = None if temp is None else int(temp)
        power = self._optional("nvmlDeviceGetPowerUsage", handle)
        out["power_w"] = None if power is None else round(power / 1000, 1)
        limit = self._optional("nvmlDeviceGetEnforcedPowerLimit", handle)
        out["power_limit_w"] = None if limit is None else round(limit / 1000, 1)
        return out

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as exc:
            raise NvmlUnavailable(f"{name}: {exc}") from None

    def _optional(self, name: str, *args: Any) -> Any:
        try:
            return self._call(name, *args)
        except NvmlUnavailable:
            return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def device_count(backend: NvmlBackend | None = None) -> tuple[int, str | None]:
    """(number of NVIDIA GPUs, None) or (0, why none were found)."""
    nvml = backend or PyNvml()
    try:
        nvml.start()
        return nvml.count(), None
    except NvmlUnavailable as exc:
        return 0, str(exc)


class DeviceTelemetry:
    """Figures for the one device a GPU worker is pinned to, found by UUID.

    ``read`` never raises: without NVML it returns None, and the reason is
    logged once (not every heartbeat) and kept in ``status``.
    """

    def __init__(self, backend: NvmlBackend | None = None) -> None:
        self._backend = backend or PyNvml()
        self._started = False
        self._handle: Any = None
        self._uuid: str | None = None
        self.status = "not read yet"
        self._said: str | None = None

    def read(self, uuid: str | None) -> dict[str, Any] | None:
        if uuid is None:
            self._unavailable("the worker's device has no UUID yet")
            return None
        try:
            if not self._started:
                self._backend.start()
                self._started = True
            if self._handle is None or self._uuid != normalize_uuid(uuid):
                self._handle = self._find(uuid)
                self._uuid = normalize_uuid(uuid)
            figures = self._backend.read(self._handle)
        except NvmlUnavailable as exc:
            self._handle = None
            self._unavailable(str(exc))
            return None
        figures["uuid"] = "GPU-" + normalize_uuid(uuid)
        if self._said is not None and self._said != "ok":
            log.info("GPU telemetry: NVML is reporting again")
        self._said = "ok"
        self.status = "ok"
        return figures

    def _find(self, uuid: str) -> Any:
        wanted = normalize_uuid(uuid)
        for index in range(self._backend.count()):
            handle = self._backend.handle(index)
            if normalize_uuid(self._backend.uuid(handle)) == wanted:
                return handle
        raise NvmlUnavailable(f"NVML reports no device with UUID GPU-{wanted}")

    def _unavailable(self, why: str) -> None:
        self.status = f"unavailable: {why}"
        if self._said != why:
            log.warning("GPU telemetry unavailable (%s); the worker carries on without it", why)
            self._said = why
