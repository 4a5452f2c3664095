"""Weights to conductances: crossbar tiles, differential pairs, scaling to g_max.

A weight matrix W[out, in] sits on tiles of `tile_rows` inputs × `tile_cols` outputs. Each
signed weight is a differential pair of devices, w = s·(g⁺ − g⁻), with one device at zero
target. The scale s maps the largest |w| of a tile (or of one output column within a tile)
to g_max. A 3-D tensor (fused experts, [E, out, in]) is E matrices, each on its own tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ConductanceMapping:
    tile_rows: int
    tile_cols: int
    g_max_us: float
    per_column: bool

    def tile_grid(self, weight: torch.Tensor) -> tuple[int, int]:
        """Tiles along outputs and inputs of one matrix."""
        return math.ceil(weight.shape[-2] / self.tile_cols), math.ceil(weight.shape[-1] / self.tile_rows)

    def scales(self, weight: torch.Tensor) -> torch.Tensor:
        """Weight units per µS, shaped [..., out, in_tiles]: one scale per output column per input tile.

        With tile scaling the scale is shared by every column of a tile; with column scaling
        each output column of each tile has its own. An all-zero block gets scale 1.
        """
        out_dim, in_dim = weight.shape[-2:]
        out_tiles, in_tiles = self.tile_grid(weight)
        padded = torch.nn.functional.pad(weight.abs(), (0, in_tiles * self.tile_rows - in_dim))
        column_max = padded.unflatten(-1, (in_tiles, self.tile_rows)).amax(dim=-1)  # [..., out, in_tiles]
        if not self.per_column:
            rows = torch.nn.functional.pad(column_max, (0, 0, 0, out_tiles * self.tile_cols - out_dim))
            tile_max = rows.unflatten(-2, (out_tiles, self.tile_cols)).amax(dim=-2, keepdim=True)
            column_max = tile_max.expand(*tile_max.shape[:-2], self.tile_cols, in_tiles).flatten(-3, -2)[..., :out_dim, :]
        scale = column_max / self.g_max_us
        return torch.where(scale > 0, scale, torch.ones_like(scale))

    def expand(self, scales: torch.Tensor, in_dim: int) -> torch.Tensor:
        """Per-weight scale [..., out, in] from per-column-per-tile scales [..., out, in_tiles]."""
        return scales.repeat_interleave(self.tile_rows, dim=-1)[..., :in_dim]

    def to_conductances(self, weight: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target conductances (g⁺, g⁻) in µS of the differential pairs."""
        g = weight / self.expand(scales, weight.shape[-1])
        return g.clamp(min=0), (-g).clamp(min=0)

    def to_weights(self, g_pos: torch.Tensor, g_neg: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return (g_pos - g_neg) * self.expand(scales, g_pos.shape[-1])
