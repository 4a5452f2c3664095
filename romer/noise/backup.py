"""Where the clean weights wait while the model sits on a chip, so `restore()` is bit-exact.

`memory` keeps a CPU copy of each on-chip tensor; `disk` writes each tensor's raw bytes to its
own file in a temporary folder, in slices of at most one expert slot (or 16 MiB of rows), and
reads back whole tensors or single slots: a model that fills memory needs no second copy of
itself, and programming a fused expert tensor touches one slot's worth of memory at a time. Each folder is named
after its process; a new disk backup removes the folders of processes that died without removing theirs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

CHUNK_BYTES = 16 * 2**20


class MemoryBackup:
    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def save(self, name: str, tensor: torch.Tensor) -> None:
        self._tensors[name] = tensor.detach().to("cpu", copy=True)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def load(self, name: str, slot: int | None = None) -> torch.Tensor:
        tensor = self._tensors[name]
        return tensor if slot is None else tensor[slot]

    def close(self) -> None:
        self._tensors.clear()


@dataclass(frozen=True)
class _Stored:
    path: Path
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def slot_bytes(self) -> int:
        return torch.Size(self.shape[1:]).numel() * torch.empty((), dtype=self.dtype).element_size()


PREFIX = "romer-clean-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(directory: str | Path | None = None) -> list[Path]:
    """Remove the clean copies that processes no longer alive left behind (a run killed by the system, as an
    out-of-memory kill is, cannot remove its own: at OLMoE-1B-7B's size, 13 GB each); the folders removed."""
    removed = []
    for folder in Path(directory or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = folder.name[len(PREFIX):].split("-")[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class DiskBackup:
    def __init__(self, directory: str | Path | None = None) -> None:
        remove_stale(directory)
        self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=directory))
        self._files: dict[str, _Stored] = {}

    def save(self, name: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach()
        stored = _Stored(self._dir / f"{len(self._files)}.bin", tuple(tensor.shape), tensor.dtype)
        rows = max(1, CHUNK_BYTES // max(stored.slot_bytes, 1))
        with open(stored.path, "wb") as handle:
            whole = tensor.reshape(1) if tensor.dim() == 0 else tensor  # a 0-d tensor cannot be split
            for part in whole.split(rows if whole.dim() < 3 else 1):
                handle.write(memoryview(part.contiguous().cpu().view(torch.uint8).numpy()))
        self._files[name] = stored

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def load(self, name: str, slot: int | None = None) -> torch.Tensor:
        """The tensor (or one slot of it) read from its file straight into a new tensor: one copy in memory."""
        stored = self._files[name]
        shape = stored.shape if slot is None else stored.shape[1:]
        out = torch.empty(shape, dtype=stored.dtype)
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        with open(stored.path, "rb", buffering=0) as handle:
            if slot is not None:
                handle.seek(slot * stored.slot_bytes)
            done = 0
            while done < len(view):
                read = handle.readinto(view[done:])
                if not read:
                    raise OSError(f"the clean copy of {name} in {stored.path} is truncated")
                done += read
        return out

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
