"""Outlier weights held in digital units, so that the arrays' scale follows the bulk of the weights.

A tile maps its largest |w| to g_max (per tile, or per output column within a tile with column scaling,
`mapping.py`), and most device and periphery errors are a fixed share of g_max: a weight's error in weight units
grows with the largest |w| that shares its scale. One outlier therefore sets the noise of a whole 256 × 256 tile.
Holding the few largest weights of each scale segment in digital units, exactly, and programming the rest lowers
that scale, and with it the error of every weight that stays on the chip. The split follows SpQR's sparse outliers
(Dettmers et al., "SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight Compression", 2023), which
keeps the weights that quantize worst in high precision; here the criterion is the one the chip's scale sets.

Per scale segment (a tile with tile scaling, one output column within a tile with column scaling) the
⌊fraction × the weights it holds⌋ largest |w| move to digital units; what that leaves of the matrix's ⌊fraction ×
its weights⌋ goes one weight each to the segments where one more outlier lowers the arrays' error most (its weights
× the drop of its squared scale: with column scaling and a fraction under one weight per column, those columns
whose largest weight stands furthest above the next). Zeros never move. The digital part costs one value and
one position per weight (`Calibration.digital_weights` counts both).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from romer.noise.mapping import ConductanceMapping


@dataclass(frozen=True)
class DigitalOutliers:
    """The digital part of one matrix [out, in]: the positions (flat indices) and values of its outlier weights."""

    index: torch.Tensor   # int64 [n], flat positions in the matrix
    values: torch.Tensor  # float32 [n]
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.values.numel())

    def dense(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """The digital part as a full matrix (zeros where a weight stays on the chip)."""
        out = torch.zeros(self.shape[0] * self.shape[1], device=device, dtype=dtype)
        out[self.index.to(out.device)] = self.values.to(out.device, dtype)
        return out.view(self.shape)


def split_outliers(weight: torch.Tensor, fraction: float,
                   mapping: ConductanceMapping) -> tuple[torch.Tensor, DigitalOutliers]:
    """(the weights left for the arrays, the digital outliers) of one float32 matrix [out, in]; the two add up to
    `weight` exactly."""
    out_dim, in_dim = weight.shape
    out_tiles, in_tiles = mapping.tile_grid(weight)
    rows, cols = mapping.tile_rows, mapping.tile_cols

    def segments(matrix: torch.Tensor) -> torch.Tensor:  # [out_tiles, in_tiles, segments per tile, segment size]
        padded = F.pad(matrix, (0, in_tiles * rows - in_dim, 0, out_tiles * cols - out_dim))
        tiles = padded.view(out_tiles, cols, in_tiles, rows).permute(0, 2, 1, 3)
        return tiles.reshape(out_tiles, in_tiles, cols, rows) if mapping.per_column else \
            tiles.reshape(out_tiles, in_tiles, 1, cols * rows)

    magnitude = segments(weight.abs().float())
    real = segments(torch.ones_like(weight, dtype=torch.float32)).sum(-1)  # an edge tile holds fewer weights
    keep = (fraction * real).floor().long()  # per segment
    remainder = int(fraction * weight.numel()) - int(keep.sum())
    top = magnitude.topk(min(int(keep.max()) + 2, magnitude.shape[-1]), dim=-1)
    if remainder > 0:
        # what ⌊fraction × segment⌋ leaves of the matrix's share goes, one weight each, to the segments where one
        # more outlier lowers the arrays' error most: the segment's weights × the drop of its squared scale
        values = F.pad(top.values, (0, 2))
        largest = values.gather(-1, keep.unsqueeze(-1)).squeeze(-1)
        after = values.gather(-1, (keep + 1).unsqueeze(-1)).squeeze(-1)
        gain = (real * (largest.pow(2) - after.pow(2))).flatten()
        extra = gain.topk(min(remainder, gain.numel())).indices
        keep = keep.flatten().index_add_(0, extra, torch.ones_like(extra)).view_as(keep)
    most = int(keep.max()) if keep.numel() else 0
    if most == 0:
        return weight, DigitalOutliers(torch.zeros(0, dtype=torch.long), torch.zeros(0), (out_dim, in_dim))
    top = magnitude.topk(most, dim=-1)
    wanted = (torch.arange(most, device=weight.device) < keep.unsqueeze(-1)) & (top.values > 0)
    chosen = torch.zeros_like(magnitude, dtype=torch.bool).scatter_(-1, top.indices, wanted)
    mask = chosen.reshape(out_tiles, in_tiles, cols, rows).permute(0, 2, 1, 3).reshape(out_tiles * cols,
                                                                                      in_tiles * rows)
    mask = mask[:out_dim, :in_dim]
    index = mask.flatten().nonzero().squeeze(-1).cpu()
    values = weight.flatten()[index.to(weight.device)].float().cpu()
    return weight.masked_fill(mask, 0.0), DigitalOutliers(index, values, (out_dim, in_dim))
