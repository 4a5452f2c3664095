"""Peak memory of a stretch of work: on CUDA the caching allocator's peak (torch.cuda.max_memory_allocated),
on a CPU the process's resident high-water mark (Linux VmHWM, reset through /proc/self/clear_refs)."""

from __future__ import annotations

import torch


def _status(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


class PeakMemory:
    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return _status("VmHWM")

    def now(self) -> int:
        """Memory held now: allocated device memory, or the resident set."""
        return torch.cuda.memory_allocated() if self.cuda else _status("VmRSS")
