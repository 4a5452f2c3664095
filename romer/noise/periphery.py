"""The periphery of every crossbar output column: fixed ADC offset and gain errors, and IR drop.

Unlike device variation, these errors are shared by every weight of a column, so they shift each
output *the same way for every token*. A router's output column is one expert's logit: a column's
offset is a per-expert, token-independent logit shift, the load disruption ROMER's paper describes.

Units. The tile product (see `analog.py`) is in units of one full-scale input on one g_max device;
the output ADC spans ±U (`adc_full_scale`) in 2^(bits−1) − 1 steps per side, so one LSB is
U / (2^(adc_bits−1) − 1) of those units. Offsets are in LSB, gains are relative.

Which errors a column has: each tile has its own ADCs, so a matrix wider than one tile (more
inputs than `tile_rows`) has one ADC per column per input tile, and their partial sums add
digitally. `adc_group` adjacent columns of a tile share one ADC (a column multiplexer) and so
share its errors. Draws come from the stream (seed, tensor, slot, "periphery"), apart from the
device stream, so switching the periphery on or off leaves every device draw as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WIRE_OHM = 0.35  # Ω per cell of line, aihwkit's default for its IR-drop model (IOParameters.ir_drop_g_ratio)


def lsb(adc_bits: int, full_scale: float) -> float:
    """One output-ADC step in tile-product units."""
    return full_scale / max(2 ** (adc_bits - 1) - 1, 1)


@dataclass(frozen=True)
class AdcOffset:
    """Each ADC's fixed offset, δ = σ₀·ε₁ + κ·|T − T_ref|·ε₂ LSB, with ε₁, ε₂ ~ N(0, 1) per ADC.

    σ₀ (`adc_offset_sigma`, LSB) is what remains after the one-time offset trim at the test
    temperature `reference_c`; κ (`adc_offset_per_c`, LSB/°C) is the spread of how the offsets of
    comparators and sense amplifiers move with heat after that trim, so the same chip read hotter
    keeps its residual ε₁ and gains the drift ε₂. Std: sqrt(σ₀² + (κ·ΔT)²) LSB.
    """

    sigma_lsb: float
    per_c_lsb: float
    delta_c: float

    @property
    def std_lsb(self) -> float:
        return math.hypot(self.sigma_lsb, self.per_c_lsb * abs(self.delta_c))

    @property
    def active(self) -> bool:
        return self.std_lsb > 0

    def draw(self, residual: torch.Tensor, drift: torch.Tensor) -> torch.Tensor:
        return self.sigma_lsb * residual + self.per_c_lsb * abs(self.delta_c) * drift


@dataclass(frozen=True)
class AdcGain:
    """Each ADC's fixed gain, 1 + σ_g·ε, ε ~ N(0, 1) per ADC (`adc_gain_sigma`, relative): the
    mismatch of its reference and sampling capacitors left after trimming. A gain multiplies the
    column's partial sum, which is linear in the column's weights: in weights mode it folds exactly
    into them."""

    sigma: float

    @property
    def active(self) -> bool:
        return self.sigma > 0

    def draw(self, eps: torch.Tensor) -> torch.Tensor:
        return 1 + self.sigma * eps


@dataclass(frozen=True)
class IrDrop:
    """Wire resistance along a tile's lines attenuates each column's sum, more for cells far from
    the output and for columns that carry more current. The steady-state approximation of IBM
    aihwkit's analog tiles (rpu_forward_backward_pass.cpp, `applyIrDrop`), with inputs x ∈ [−1, 1]
    and weights w in units of g_max over the n rows of a tile:

        I_o = Σ_j |w_oj|·|x_j|,   a_o = n·I_o / (G_wire / g_max),   c_o = a_o·(a_o·(0.05·a_o − 0.2) + 0.5)
        y_o ← y_o − ir_drop · c_o · Σ_j w_oj · x_j · (1 − (1 − j/n)²)

    G_wire = 1 / 0.35 Ω per cell (aihwkit's default), so G_wire / g_max = 1 / (0.35 Ω · g_max).
    `ir_drop` is the strength (0: off; aihwkit's ir_drop). Deterministic: `strength` leaves it.
    """

    scale: float
    g_max_us: float

    @property
    def active(self) -> bool:
        return self.scale > 0

    @property
    def wire_ratio(self) -> float:
        return 1.0 / (WIRE_OHM * self.g_max_us * 1e-6)

    def loss(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The drop per tile and column, [tokens, tiles, out], for tile inputs x [tokens, tiles, rows]
        and weights w [out, tiles, rows], both normalised as above: subtract it from the tile product."""
        rows = x.shape[-1]
        current = torch.einsum("nkr,okr->nko", x.abs(), w.abs())
        a = current * (rows / self.wire_ratio)
        c = a * (a * (0.05 * a - 0.2) + 0.5)
        far = 1 - torch.arange(rows, device=x.device, dtype=x.dtype) / rows
        weighted = torch.einsum("nkr,okr->nko", x * (1 - far * far), w)
        return self.scale * c * weighted


@dataclass(frozen=True)
class ColumnErrors:
    """One programmed matrix's periphery: per output column and input tile, [out, in_tiles]."""

    gain: torch.Tensor | None        # relative, 1 = ideal
    offset_lsb: torch.Tensor | None  # LSB

    def slot(self, index: int | None) -> "ColumnErrors":
        if index is None:
            return self
        return ColumnErrors(None if self.gain is None else self.gain[index],
                            None if self.offset_lsb is None else self.offset_lsb[index])

    @staticmethod
    def stack(errors: list["ColumnErrors"]) -> "ColumnErrors":
        first = errors[0]
        return ColumnErrors(None if first.gain is None else torch.stack([e.gain for e in errors]),
                            None if first.offset_lsb is None else torch.stack([e.offset_lsb for e in errors]))


@dataclass(frozen=True)
class ColumnPeriphery:
    """The per-chip errors of every output column's periphery (`NoiseConfig` fields adc_offset_sigma,
    adc_offset_per_c, adc_gain_sigma, adc_group, ir_drop)."""

    offset: AdcOffset
    gain: AdcGain
    ir_drop: IrDrop
    tile_cols: int
    adc_group: int

    @property
    def fixed_errors(self) -> bool:
        return self.offset.active or self.gain.active

    @property
    def per_forward(self) -> bool:
        """Whether a forward pass must see it (in weights mode a gain alone folds into the weights)."""
        return self.offset.active or self.ir_drop.active

    def draw(self, out_dim: int, in_tiles: int, rng: torch.Generator, device=None) -> ColumnErrors | None:
        """The errors of one matrix [out, in_tiles]; every ADC draws (residual, drift, gain) so that one
        field's value never changes another's draws."""
        if not self.fixed_errors:
            return None
        out_tiles = math.ceil(out_dim / self.tile_cols)
        groups = math.ceil(self.tile_cols / self.adc_group)
        eps = torch.randn((3, out_tiles, groups, in_tiles), generator=rng, device=device)
        column = torch.arange(out_dim, device=eps.device)
        per_column = eps[:, column // self.tile_cols, (column % self.tile_cols) // self.adc_group]  # [3, out, tiles]
        return ColumnErrors(self.gain.draw(per_column[2]) if self.gain.active else None,
                            self.offset.draw(per_column[0], per_column[1]) if self.offset.active else None)
