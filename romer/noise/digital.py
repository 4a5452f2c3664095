"""Digital corrections after the ADCs of one on-chip tensor, set per chip after programming.

Every CIM chip has digital logic after its ADCs that can be set per chip without touching a
conductance: each output column's digital scale and offset (an offset is a trim in ADC codes, so
it scales with the token's input scale, as the ADC's own offset does), and, where there is SRAM
and a small digital multiplier, a low-rank adapter U·V computed from the same digital input:

    y ← y ⊙ (1 + g) + x_max · c + (x Vᵀ) Uᵀ

per output column (per expert slot for fused experts). All parts start at zero: the chip as
programmed. `calibration/retune.py` fits them against the clean twin.
"""

from __future__ import annotations

import torch
from torch import nn


class ColumnCorrection(nn.Module):
    """The digital corrections of one on-chip matrix, [out, in] (slots = None), or of E expert slots."""

    def __init__(self, out_dim: int, in_dim: int, slots: int | None = None, columns: bool = True, rank: int = 0,
                 seed: int = 0, device=None, per_matrix: bool = False, offsets: bool = True) -> None:
        super().__init__()
        self.per_matrix = per_matrix  # one gain shared by every column of a matrix (stored once)
        lead = () if slots is None else (slots,)
        self.slots, self.out_dim, self.in_dim = slots, out_dim, in_dim
        self.gain = nn.Parameter(torch.zeros(*lead, out_dim, device=device)) if columns else None
        self.offset = nn.Parameter(torch.zeros(*lead, out_dim, device=device)) if columns and offsets else None
        self.rank = rank
        if rank:
            # LoRA-style start: V small and random, U zero, so the product starts at exactly zero
            generator = torch.Generator().manual_seed(seed)
            down = torch.randn(*lead, rank, in_dim, generator=generator) / in_dim ** 0.5
            self.down = nn.Parameter(down.to(device))
            self.up = nn.Parameter(torch.zeros(*lead, out_dim, rank, device=device))
        else:
            self.down = self.up = None

    @property
    def parameters_added(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def stored_parameters(self) -> int:
        """The parameters a chip must store: every part this correction has, whatever its value (a part a method
        allocated is counted even where its fit left it at zero); a per-matrix gain is one value per matrix."""
        matrices = self.slots or 1
        return sum(matrices if self.per_matrix and p.dim() == (1 if self.slots is None else 2) else p.numel()
                   for p in self.parameters())

    def forward(self, y: torch.Tensor, x: torch.Tensor, x_max, slot: int | None = None) -> torch.Tensor:
        """Corrected outputs y [..., out] for inputs x [..., in]; `x_max` [..., 1] is the token's input
        scale (a function that computes it, so the plain path pays only when an offset asks for it)."""
        pick = (lambda t: t) if slot is None else (lambda t: t[slot])
        if self.gain is not None:
            y = y * (1 + pick(self.gain)).to(y.dtype)
        if self.offset is not None:
            y = y + (x_max() * pick(self.offset)).to(y.dtype)
        if self.down is not None:
            y = y + ((x @ pick(self.down).t().to(x.dtype)) @ pick(self.up).t().to(x.dtype))
        return y
