"""Per-forward effects: read noise and the tile-level analog matrix-vector product.

An on-chip weight is wrapped in `AnalogWeight`, a tensor subclass that intercepts
`F.linear`; indexing a fused expert tensor by slot keeps the wrapper, so every family that
computes its experts with `F.linear` (transformers' eager experts) is simulated the same way.

Analog product per tile: inputs are scaled by their absolute maximum (per token) and
quantised by the DAC; each tile of `tile_rows` inputs produces its own partial sums, in
units of one full-scale input on one g_max device, less the IR drop along its lines; each
column's ADC applies its fixed gain, adds Gaussian noise (σ_ADC·U) and its fixed offset, clips to
±U and quantises; partial sums are rescaled and added digitally.

Weights mode keeps the stored (noisy) weights and an ordinary `F.linear`, and adds only what the
periphery does to it: each column's fixed offset as the ADC sees it (δ LSB, scaled by the tile's
weight scale and the token's input scale, summed over input tiles) and the IR drop. ADC gains are
folded into the stored weights when the chip is programmed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from romer.errors import RomerError
from romer.noise.config import NoiseConfig
from romer.noise.digital import ColumnCorrection
from romer.noise.mapping import ConductanceMapping
from romer.noise.periphery import ColumnErrors, IrDrop, lsb
from romer.noise.streams import stream


def levels_per_side(bits: int) -> int:
    """A symmetric converter's nonzero levels on each side of zero: 2^(bits-1) − 1 (0 for 1 bit, which is ±1)."""
    return 2 ** (bits - 1) - 1


def quantize(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform quantisation of values in [-1, 1] to 2^(bits-1) − 1 levels per side; 1 bit is ±1."""
    levels = levels_per_side(bits)
    if levels == 0:
        return torch.where(values >= 0, 1.0, -1.0).to(values.dtype)
    return torch.round(values.clamp(-1, 1) * levels) / levels


@dataclass
class TileProgram:
    """What the digital periphery of one on-chip tensor knows: its scales and its noise settings."""

    name: str
    config: NoiseConfig
    seed: int
    scales: torch.Tensor  # [(E,) out, in_tiles], weight units per µS
    errors: ColumnErrors | None = None  # the columns' fixed periphery errors, [(E,) out, in_tiles]
    correction: ColumnCorrection | None = None  # digital corrections after the ADCs, set per chip (retune)
    calls: int = field(default=0)
    digital_slots: set[int] = field(default_factory=set)  # expert slots computed digitally: clean weights, no periphery
    input_transform: torch.Tensor | None = None  # a digital factor [r, in] the inputs pass through first (HPD's Vᵀ)
    slot_transforms: dict = field(default_factory=dict)  # expert slot → its own digital factor Vᵀ (HPD per slot)
    outliers: dict = field(default_factory=dict)  # slot (None: a matrix of its own) → its DigitalOutliers
    _column_offset: torch.Tensor | None = field(default=None, repr=False)

    @property
    def mapping(self) -> ConductanceMapping:
        c = self.config
        return ConductanceMapping(c.tile_rows, c.tile_cols, c.g_max_us, per_column=c.scaling == "column")

    def column_offset(self, slot: int | None) -> torch.Tensor:
        """Each output column's fixed ADC offset in weight units per unit input scale, summed over input tiles
        (weights mode adds it to every product); computed once per chip instance."""
        if self._column_offset is None:
            c = self.config
            self._column_offset = (self.errors.offset_lsb * lsb(c.adc_bits, c.adc_full_scale) * self.scales
                                   * c.g_max_us).sum(dim=-1)
            for digital in self.digital_slots:
                self._column_offset[digital] = 0
        return self._column_offset if slot is None else self._column_offset[slot]

    def set_slot(self, slot: int, scales: torch.Tensor, errors: ColumnErrors | None, outliers=None) -> None:
        """One expert slot programmed again: its scales, periphery errors and digital outliers; the per-forward
        streams start again, as a tensor programmed anew does."""
        self.scales[slot] = scales
        if outliers is None:
            self.outliers.pop(slot, None)
        else:
            self.outliers[slot] = outliers
        if errors is not None:
            for mine, theirs in ((self.errors.gain, errors.gain), (self.errors.offset_lsb, errors.offset_lsb)):
                if mine is not None:
                    mine[slot] = theirs
        self._column_offset = None
        self.calls = 0

    def set_digital(self, slot: int, digital: bool) -> None:
        """One expert slot moved to the digital periphery (or back): its products skip every chip effect."""
        (self.digital_slots.add if digital else self.digital_slots.discard)(slot)
        self._column_offset = None

    def next_stream(self, slot: int | None, purpose: str, device) -> torch.Generator:
        self.calls += 1
        return stream(self.seed, self.name, slot, purpose, self.calls, device=device)


class AnalogWeight(torch.Tensor):
    """A weight on the chip; `F.linear` with it runs `analog_linear`.

    Any other product that reaches an on-chip weight (`matmul`, `bmm`, `grouped_mm`, `einsum`, ...), directly or
    through a transpose, view or reshape of it, is a one-line `RomerError` naming the op: a product romer does not
    handle would silently compute with the stored weights alone, without the chip's offsets, read noise or analog
    tile path."""

    program: TileProgram
    slot: int | None
    derived: bool = False  # a transpose, view or reshape of the weight: no longer in F.linear's [out, in] layout

    @staticmethod
    def wrap(weight: torch.Tensor, program: TileProgram, slot: int | None = None,
             derived: bool = False) -> "AnalogWeight":
        wrapped = weight.as_subclass(AnalogWeight)
        wrapped.program, wrapped.slot, wrapped.derived = program, slot, derived
        return wrapped

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and isinstance(args[1], AnalogWeight) and not args[1].derived:
            weight = args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            return analog_linear(args[0], weight.as_subclass(torch.Tensor), bias, weight.program, weight.slot)
        if is_product(func):
            weight = next((a for a in _flat(args, kwargs) if isinstance(a, AnalogWeight)), None)
            name = weight.program.name if weight is not None else "(nested in the arguments)"
            raise RomerError(f"on-chip weight {name} reached {op_name(func)}, a product romer does not "
                             "simulate (only F.linear on the weight itself is); run the model's eager expert / linear "
                             "path (model.set_experts_implementation('eager')) or move the tensor off the chip")
        with torch._C.DisableTorchFunctionSubclass():
            result = func(*args, **kwargs)
        source = args[0] if args else None
        if isinstance(source, AnalogWeight) and isinstance(result, torch.Tensor):
            if func is torch.Tensor.__getitem__ and source.dim() == 3 and _is_slot(args[1]) and not source.derived:
                return AnalogWeight.wrap(result, source.program, int(args[1]))
            if func in _KEEPS_WEIGHT and result.shape == source.shape:
                # a cast or copy is still the same weights on the same chip (DeepSeek's routers cast to float32)
                return AnalogWeight.wrap(result, source.program, source.slot, source.derived)
            if op_name(func) in _REARRANGES:  # still the chip's weights, in another layout: watched, never multiplied
                return AnalogWeight.wrap(result, source.program, source.slot, derived=True)
        return result


# names (split at non-letters) that mark a product of a tensor with a weight
_PRODUCT_WORDS = {"mm", "bmm", "addmm", "baddbmm", "addbmm", "matmul", "rmatmul", "einsum", "mv", "addmv", "dot",
                  "vdot", "tensordot", "bilinear", "linear", "inner", "outer", "kron", "conv1d", "conv2d", "conv3d"}
_REARRANGES = {"transpose", "t", "permute", "view", "reshape", "flatten", "unflatten", "unsqueeze", "squeeze",
               "expand", "narrow", "T", "mT", "swapaxes", "movedim", "__getitem__", "split", "chunk", "unbind"}


def op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":  # a property of Tensor (T, mT): its name is on the descriptor's owner
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _names_a_product(func) -> bool:
    return bool(set(re.split(r"[^a-z0-9]+", op_name(func).lower())) & _PRODUCT_WORDS)


_cached_product_check = functools.lru_cache(maxsize=None)(_names_a_product)


def is_product(func) -> bool:
    """Whether `func` multiplies by a weight; looked up once per op (this runs on every op an on-chip weight meets)."""
    try:
        return _cached_product_check(func)
    except TypeError:  # an op that cannot be a dictionary key
        return _names_a_product(func)


def _flat(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


_KEEPS_WEIGHT = {torch.Tensor.to, torch.Tensor.type, torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16,
                 torch.Tensor.double, torch.Tensor.contiguous, torch.Tensor.clone}


def _is_slot(index) -> bool:
    return isinstance(index, int) or (isinstance(index, torch.Tensor) and index.dim() == 0)


def input_scale(x: torch.Tensor) -> torch.Tensor:
    """The DAC's full scale per token [..., 1]: the token's largest |input| (never zero)."""
    return x.abs().amax(dim=-1, keepdim=True).float().clamp(min=torch.finfo(torch.float32).tiny)


def analog_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, program: TileProgram,
                  slot: int | None) -> torch.Tensor:
    """The chip's product of one on-chip matrix (or expert slot), with the digital corrections after its ADCs."""
    y = chip_linear(x, weight, program, slot)
    if program.correction is not None:
        y = program.correction(y, x, lambda: input_scale(x), slot)
    return y + bias if bias is not None else y


def chip_linear(x: torch.Tensor, weight: torch.Tensor, program: TileProgram, slot: int | None) -> torch.Tensor:
    if slot is not None and slot in program.digital_slots:
        return F.linear(x, weight.to(x.dtype))  # a digital expert: its clean weights, no chip effect
    transform = program.input_transform if slot is None else program.slot_transforms.get(slot)
    if transform is not None:
        x = F.linear(x, transform.to(x.dtype))  # HPD: the digital factor, then the arrays' U·Σ
    c = program.config
    scales = program.scales if slot is None else program.scales[slot]
    errors = None if program.errors is None else program.errors.slot(slot)
    ir_drop = IrDrop(c.ir_drop, c.g_max_us)
    mapping = program.mapping
    out_dim, in_dim = weight.shape
    w = weight.float()
    if c.read_sigma * c.strength > 0:
        # each weight is a pair of devices, each reading with σ = read_sigma·g_max
        rng = program.next_stream(slot, "read", weight.device)
        noise = torch.randn(w.shape, generator=rng, device=w.device) * (2 ** 0.5 * c.read_sigma * c.strength * c.g_max_us)
        w = w + noise * mapping.expand(scales, in_dim)
    step = lsb(c.adc_bits, c.adc_full_scale)
    if c.mode == "weights" and not ir_drop.active:
        y = F.linear(x, w.to(x.dtype))
        if errors is not None and errors.offset_lsb is not None:
            offset = program.column_offset(slot)  # [out]: Σ over input tiles of δ·LSB·scale·g_max
            return torch.addcmul(y, input_scale(x).to(y.dtype), offset.to(y.dtype))
        return y

    outliers = program.outliers.get(slot)
    digital = outliers.dense(w.device) if outliers is not None and len(outliers) else None
    if digital is not None:
        w = w - digital  # the weight holds the digital outliers too; only the rest passes the tiles and ADCs
    flat = x.reshape(-1, in_dim).float()
    tiles = scales.shape[-1]
    rows = in_dim if tiles == 1 else c.tile_rows  # a single tile needs no zero padding
    pad = tiles * rows - in_dim
    unit = adc_code_unit(c)
    w_codes = (F.pad(w, (0, pad)) if pad else w).reshape(out_dim, tiles, rows) / (
        scales.unsqueeze(-1) * (c.g_max_us * unit))  # what one full-scale input row adds to a column, in ADC codes
    adc_rng = program.next_stream(slot, "adc", x.device) if c.mode == "analog" and c.sigma_adc * c.strength > 0 else None
    chunk = tokens_per_chunk(tiles, out_dim)
    parts = [_tile_products(flat[start:start + chunk], w_codes, unit, scales, errors, c, ir_drop, adc_rng, step, pad)
             for start in range(0, flat.shape[0], chunk)]
    y = parts[0] if len(parts) == 1 else torch.cat(parts) if parts else flat.new_zeros(0, out_dim)
    if digital is not None:
        y = y + flat @ digital.t()
    return y.to(x.dtype).view(*x.shape[:-1], out_dim)


MAX_PARTIAL_BYTES = 256 * 2**20  # per-tile partial sums of one call's chunk of tokens (their ADC noise as much again)


def tokens_per_chunk(tiles: int, out_dim: int) -> int:
    """Tokens whose per-tile partial sums [tokens, tiles, out] in float32 fit MAX_PARTIAL_BYTES, a multiple of 16 (so
    that on a CPU the ADC noise drawn chunk by chunk is the noise one draw for all tokens gives, bit for bit)."""
    return max(16, MAX_PARTIAL_BYTES // (4 * tiles * out_dim) // 16 * 16)


def adc_code_unit(c: NoiseConfig) -> float:
    """The device units (of a full-scale partial sum) one ADC code stands for; 1 where nothing is rounded."""
    levels = levels_per_side(c.adc_bits)
    return c.adc_full_scale / levels if c.mode == "analog" and levels else 1.0


def _tile_products(flat: torch.Tensor, w_codes: torch.Tensor, unit: float, scales: torch.Tensor, errors,
                   c: NoiseConfig, ir_drop: IrDrop, adc_rng: torch.Generator | None, step: float,
                   pad: int) -> torch.Tensor:
    """The tile-level product for a chunk of tokens [n, in]: DAC, per-tile partial sums, the ADC, the digital sum.

    The partial sums are kept in the ADC's code units from the start (`unit` device units per code, folded into the
    weights `w_codes`, which are smaller than the partial sums): the ADC then only clamps and rounds, and the code
    step joins the digital sum's one multiply. Without autograd the steps after the product work in place on the one
    [n, tiles, out] tensor."""
    out_dim, tiles, rows = w_codes.shape
    levels = levels_per_side(c.adc_bits)
    x_max = input_scale(flat)
    x_in = F.pad(flat / x_max, (0, pad)).view(-1, tiles, rows)
    if c.mode == "analog":
        x_in = quantize(x_in, c.dac_bits)
    partial = torch.einsum("nkr,okr->nko", x_in, w_codes)  # per-tile outputs, in ADC codes
    if ir_drop.active:
        partial = partial - ir_drop.loss(x_in, w_codes * unit) / unit
    in_place = not partial.requires_grad
    if c.mode == "analog" and errors is not None and errors.gain is not None:
        partial = partial.mul_(errors.gain.t()) if in_place else partial * errors.gain.t()
    if adc_rng is not None:
        noise = torch.randn(partial.shape, generator=adc_rng, device=partial.device)
        partial = torch.add(partial, noise, alpha=c.sigma_adc * c.strength * c.adc_full_scale / unit)
    if errors is not None and errors.offset_lsb is not None:
        offset = errors.offset_lsb.t() * (step / unit)
        partial = partial.add_(offset) if in_place else partial + offset
    if c.mode == "analog":
        if levels == 0:
            partial = torch.where(partial >= 0, 1.0, -1.0).to(partial.dtype)
            unit = c.adc_full_scale
        else:
            partial = partial.clamp_(-levels, levels).round_() if in_place else partial.clamp(-levels, levels).round()
    column_scale = scales.t() * (c.g_max_us * unit)  # [tiles, out]: codes back to weight units
    if tiles == 1:  # no digital sum over tiles
        partial = partial.reshape(-1, out_dim)
        return partial.mul_(column_scale).mul_(x_max) if in_place else partial * column_scale * x_max
    return (partial * column_scale).sum(dim=1) * x_max
