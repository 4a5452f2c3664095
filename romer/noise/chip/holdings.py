"""What one chip instance holds and where: its tensors, their clean weights (the backup), the targets calibration
re-programmed into slots, the layout (arrays, digital periphery, HPD's factors, digital outliers) and the digital
corrections after the ADCs. Answers every question about them; writes no weight (`programmer.py` does)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from romer.errors import RomerError
from romer.noise.backup import DiskBackup, MemoryBackup
from romer.noise.digital import ColumnCorrection
from romer.noise.layout import ChipLayout
from romer.noise.outliers import DigitalOutliers
from romer.noise.roles import ChipTensor

SMALL_BACKUP_BYTES = 256 * 2**20


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_backup(tensors: list[ChipTensor]) -> str:
    """`memory` for small models, and for accelerator-resident ones whose clean copy fits comfortably in
    host memory (it never takes device memory); otherwise `disk`, so that no second copy of a large
    CPU-resident model is ever held."""
    total = sum(t.param.numel() * t.param.element_size() for t in tensors)
    on_accelerator = any(t.param.device.type != "cpu" for t in tensors)
    if total <= SMALL_BACKUP_BYTES or (on_accelerator and total <= _host_memory_bytes() // 2):
        return "memory"
    return "disk"


def backup_store(tensors: list[ChipTensor], kind: str = "auto") -> MemoryBackup | DiskBackup:
    """An empty store of the clean weights: `memory`, `disk`, or `auto` (`choose_backup`)."""
    kind = choose_backup(tensors) if kind == "auto" else kind
    return MemoryBackup() if kind == "memory" else DiskBackup()


@dataclass
class ChipHoldings:
    tensors: list[ChipTensor]
    backup: MemoryBackup | DiskBackup
    originals: dict[str, nn.Parameter] = field(default_factory=dict)
    targets: dict[tuple[str, int | None], torch.Tensor] = field(default_factory=dict)
    corrections: dict[str, ColumnCorrection] = field(default_factory=dict)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # HPD: name → (U·Σ, Vᵀ)
    outliers: dict[tuple[str, int | None], DigitalOutliers] = field(default_factory=dict)  # their digital parts
    layout: ChipLayout = field(default_factory=ChipLayout)
    slot_factors: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # HPD per slot

    @classmethod
    def taken_from(cls, tensors: list[ChipTensor], backup: MemoryBackup | DiskBackup) -> "ChipHoldings":
        """The holdings of a chip about to be programmed: each tensor's parameter, its clean weights saved."""
        holdings = cls(tensors, backup)
        for tensor in tensors:
            holdings.originals[tensor.name] = tensor.param
            backup.save(tensor.name, tensor.param)
        return holdings

    def forget_calibration(self) -> None:
        """Targets, layout, corrections, factors and outliers back to the plain chip's."""
        self.targets.clear()
        self.layout = ChipLayout()
        self.corrections.clear()
        self.factors.clear()
        self.outliers.clear()
        self.slot_factors.clear()

    # ---- lookups -----------------------------------------------------------------------------
    def tensor(self, name: str) -> ChipTensor:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise RomerError(f"'{name}' is not on this chip")

    def name_of(self, module: nn.Module, attribute: str) -> str | None:
        for tensor in self.tensors:
            if tensor.module is module and tensor.attribute == attribute:
                return tensor.name
        return None

    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def on_chip_names(self) -> list[str]:
        return [t.name for t in self.tensors if t.name not in self.layout.digital]

    def is_digital(self, name: str, slot: int | None = None) -> bool:
        return self.layout.is_digital(name, slot)

    def total_parameters(self) -> int:
        return sum(self.originals[t.name].numel() for t in self.tensors)

    def is_fused(self, name: str) -> bool:
        return self.originals[name].dim() == 3

    def clean_value(self, name: str, slot: int | None = None) -> torch.Tensor:
        if (name, slot) in self.targets:
            return self.targets[(name, slot)]
        if slot is not None:
            return self.backup.load(name, slot)
        clean = self.backup.load(name)
        slots = {s: t for (n, s), t in self.targets.items() if n == name and s is not None}
        if slots:
            clean = clean.clone()
            for s, target in slots.items():
                clean[s] = target
        return clean

    def on_chip_parameters(self) -> int:
        digital = self.layout.digital
        whole = sum(self.originals[t.name].numel() for t in self.tensors if t.name not in digital)
        factored = sum(self.originals[n].numel() - on_chip.numel() for n, (on_chip, _) in self.factors.items()
                       if n not in digital)
        factored += sum(self.originals[n][s].numel() - on_chip.numel()
                        for (n, s), (on_chip, _) in self.slot_factors.items()
                        if n not in digital and not self.layout.is_digital(n, s))
        return whole - factored - sum(self.originals[n][s].numel() for n, s in self.layout.digital_slots
                                      if n not in digital)

    def outlier_weights(self, name: str | None = None) -> int:
        return sum(len(part) for (n, slot), part in self.outliers.items()
                   if (name is None or n == name) and not self.layout.is_digital(n, slot))

    def outlier_counts(self, name: str) -> dict[int | None, int]:
        return {slot: len(part) for (n, slot), part in self.outliers.items()
                if n == name and not self.layout.is_digital(n, slot)}

    def slot_transforms_of(self, name: str) -> dict[int, torch.Tensor]:
        """Expert slot → its digital factor Vᵀ, for the slots of a fused tensor held as HPD's factors."""
        return {s: vt for (n, s), (_, vt) in self.slot_factors.items() if n == name}

    def outliers_of(self, name: str) -> dict[int | None, DigitalOutliers]:
        return {slot: part for (n, slot), part in self.outliers.items() if n == name}

    def arrays_shape(self, name: str) -> tuple[int, int]:
        if name in self.factors:
            return tuple(self.factors[name][0].shape[-2:])
        return tuple(self.originals[name].shape[-2:])

    def svd_factors(self, name: str, slot: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """HPD's exact factors of the clean weights of a matrix (or one expert slot): (U·Σ [out, r], Vᵀ [r, in])."""
        u, sigma, vt = torch.linalg.svd(self.clean_value(name, slot).double(), full_matrices=False)
        return (u * sigma).float(), vt.float()
