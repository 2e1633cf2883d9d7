"""What NVML says about the machine's GPUs. Degrades to "none" without a driver."""

from __future__ import annotations


def device_count() -> tuple[int, str | None]:
    """(number of NVIDIA GPUs, None) or (0, why none were found)."""
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py not installed
        return 0, f"nvidia-ml-py is not installed ({exc})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return 0, f"NVML could not start: {exc}"
    try:
        return int(pynvml.nvmlDeviceGetCount()), None
    finally:
        pynvml.nvmlShutdown()
