"""How much device memory a worker may give to models, and what it uses.

On a GPU the figures come from CUDA (free memory on the device, this
process's allocations); ``--memory-limit-mb`` caps the process on top of
that, and is enforced by the allocator. On the CPU there is nothing to
measure, so only the cap applies, against the models' estimated sizes.
torch is imported only for a CUDA device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIB = 1024 * 1024
# Beyond its weights, a model needs room for activations and the allocator's
# slack; a flat allowance is a rough estimate, and `memory_mb` overrides it.
WORKSPACE_MB = 32.0
WEIGHTS_FACTOR = 1.5


def estimate_mb(folder: Path, options: dict[str, Any], meta_memory_mb: float | None) -> float:
    """The memory a model is expected to need: the route's ``options.memory_mb``,
    else the artifact's ``memory_mb``, else its files' size plus a workspace."""
    if options.get("memory_mb") is not None:
        return float(options["memory_mb"])
    if meta_memory_mb is not None:
        return float(meta_memory_mb)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return round(size / MIB * WEIGHTS_FACTOR + WORKSPACE_MB, 1)


class DeviceMemory:
    def __init__(self, device: str, limit_mb: float | None) -> None:
        self.device = device
        self.limit_mb = limit_mb
        self.committed_mb = 0.0  # estimates of the models loaded so far (CPU)
        self.baseline_mb: float | None = None
        self._torch: Any = None

    def start(self) -> None:
        if self.device != "cuda":
            return
        import torch

        self._torch = torch
        torch.cuda.init()
        if self.limit_mb is not None:
            total = torch.cuda.get_device_properties(0).total_memory / MIB
            # The allocator itself refuses to go past the cap: an oversized
            # batch raises out-of-memory here instead of starving a neighbour.
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.limit_mb / total), 0)

    def free_mb(self) -> float | None:
        """Memory still available for a new model, or None when unbounded."""
        if self._torch is not None:
            free, _ = self._torch.cuda.mem_get_info(0)
            free_mb = free / MIB
            if self.limit_mb is not None:
                used = self._torch.cuda.memory_reserved(0) / MIB
                free_mb = min(free_mb, self.limit_mb - used)
            return max(0.0, free_mb)
        if self.limit_mb is not None:
            return max(0.0, self.limit_mb - self.committed_mb)
        return None

    def fits(self, need_mb: float) -> tuple[bool, str]:
        free = self.free_mb()
        if free is None or need_mb <= free:
            return True, ""
        where = "on the GPU" if self._torch is not None else "under --memory-limit-mb"
        return False, f"needs ~{need_mb:.0f} MiB, {free:.0f} MiB free {where}"

    def commit(self, need_mb: float) -> None:
        self.committed_mb += need_mb

    def uncommit(self, need_mb: float) -> None:
        """A model was unloaded."""
        self.committed_mb = max(0.0, self.committed_mb - need_mb)

    def mark_baseline(self) -> None:
        """What the process holds with its models loaded and nothing running."""
        if self._torch is not None:
            self.baseline_mb = round(self._torch.cuda.memory_allocated(0) / MIB, 1)

    def release(self) -> None:
        """Give cached blocks back after an out-of-memory, so the retry has room."""
        if self._torch is not None:
            self._torch.cuda.empty_cache()

    def figures(self) -> dict[str, Any]:
        if self._torch is None:
            out: dict[str, Any] = {"committed_mb": round(self.committed_mb, 1)}
            if self.limit_mb is not None:
                out["limit_mb"] = self.limit_mb
            return out
        cuda = self._torch.cuda
        return {
            "allocated_mb": round(cuda.memory_allocated(0) / MIB, 1),
            "reserved_mb": round(cuda.memory_reserved(0) / MIB, 1),
            "peak_mb": round(cuda.max_memory_allocated(0) / MIB, 1),
            "baseline_mb": self.baseline_mb,
            "limit_mb": self.limit_mb,
        }

    def device_uuid(self) -> str | None:
        if self._torch is None:
            return None
        uuid = getattr(self._torch.cuda.get_device_properties(0), "uuid", None)
        return None if uuid is None else str(uuid)
