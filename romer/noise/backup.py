"""Where the clean weights wait while the model sits on a chip, so `restore()` is bit-exact.

`memory` keeps a CPU copy of each on-chip tensor; `disk` writes each to its own safetensors
file in a temporary folder, so a model that fills memory needs no second copy of itself.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class MemoryBackup:
    def __init__(self) -> None:
        self._tensors: dict[str, torch.Tensor] = {}

    def save(self, name: str, tensor: torch.Tensor) -> None:
        self._tensors[name] = tensor.detach().to("cpu", copy=True)

    def load(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def close(self) -> None:
        self._tensors.clear()


class DiskBackup:
    def __init__(self, directory: str | Path | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="romer-clean-", dir=directory))
        self._files: dict[str, Path] = {}

    def save(self, name: str, tensor: torch.Tensor) -> None:
        path = self._dir / f"{len(self._files)}.safetensors"
        save_file({"t": tensor.detach().contiguous().cpu()}, path)
        self._files[name] = path

    def load(self, name: str) -> torch.Tensor:
        return load_file(self._files[name])["t"]

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)
