"""`ChipHandle`: one programmed chip instance of one model, and everything calibration may ask of it.

The handle is the chip's public face; three collaborators do the work, each with one job:
- `ChipHoldings` (holdings.py): what the chip holds and where, and every question about it;
- `ChipProgrammer` (programmer.py): writing weights, programmed or clean, and the forward path of each tensor;
- `ExpertsPath` (experts_path.py): how fused experts are computed while the model sits on the chip.
The handle itself keeps the chip's lifetime: reading it at another moment (`move_to`), lending the model to its
clean twin or to another instance (`suspended`, `other_instance`) and `restore`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from romer.errors import RomerError
from romer.noise.analog import AnalogWeight, TileProgram, chip_linear
from romer.noise.backup import DiskBackup, MemoryBackup
from romer.noise.chip.experts_path import ExpertsPath
from romer.noise.chip.holdings import ChipHoldings, backup_store
from romer.noise.chip.programmer import ChipProgrammer, needs_forward_path
from romer.noise.chip.seats import seat, unseat
from romer.noise.config import NoiseConfig, validated
from romer.noise.digital import ColumnCorrection
from romer.noise.layout import ChipLayout
from romer.noise.physics import DevicePhysics
from romer.noise.roles import ChipTensor, on_chip_tensors


class ChipHandle:
    """One programmed chip instance of one model; `restore()` undoes it exactly.

    Calibration may re-program single expert slots (`reprogram_slot`: the slot's arrays take new
    target weights and, being programmed again, that slot's own fresh noise from the stream
    (seed, tensor, slot)), change the chip's layout (`make_digital`, `decompose`, `split_outliers`),
    set the digital corrections after a tensor's ADCs (`attach_correction`), or look at the clean
    model for a moment (`suspended`). Every change is undone exactly.

    A calibration installed on the chip registers its removal (`before_restore`): `restore()` removes
    it first, and a restored handle refuses every further change in one line.

    `model`, `config` (the chip at the moment it is read) and `seed` are read-only attributes.
    """

    def __init__(self, model: nn.Module, config: NoiseConfig, seed: int, tensors: list[ChipTensor],
                 backup: MemoryBackup | DiskBackup):
        self.model, self.config, self.seed = model, config, seed
        physics = DevicePhysics.from_config(config)
        self._holdings = ChipHoldings.taken_from(tensors, backup)
        self._programmer = ChipProgrammer(self._holdings, config, seed, physics, needs_forward_path(config, physics))
        self._experts = ExpertsPath(model)
        self._before_restore: list[Callable[[], None]] = []
        self._restored = False

    @classmethod
    @torch.no_grad()
    def program(cls, model: nn.Module, config: NoiseConfig, seed: int, tensors: list[ChipTensor],
                backup: MemoryBackup | DiskBackup, layout: ChipLayout | None = None, calibration=None) -> "ChipHandle":
        """Program `model` onto chip instance `seed` (checked arguments: `apply_noise_` is the public door)."""
        handle = cls(model, config, seed, tensors, backup)
        holdings = handle._holdings
        handle._choose_experts_path()
        placed = layout or ChipLayout()
        if calibration is not None:
            placed = placed.merged(calibration.layout())
            holdings.corrections |= {n: c for n, c in calibration.correction_items() if n in holdings.originals}
        holdings.layout = placed.restricted_to({name: param.dim() for name, param in holdings.originals.items()})
        holdings.factors = {name: holdings.svd_factors(name) for name in sorted(holdings.layout.decomposed)}
        holdings.slot_factors = {(name, slot): holdings.svd_factors(name, slot)
                                 for name, slot in sorted(holdings.layout.decomposed_slots)}
        if holdings.corrections or holdings.slot_factors:
            handle._choose_experts_path()  # again, now that the carried corrections and factors are known
        handle._programmer.install()
        seat(model, handle)
        if calibration is not None:
            calibration.bind_chip(handle)
        return handle

    # ---- the chip's state --------------------------------------------------------------------
    @property
    def restored(self) -> bool:
        """Whether `restore()` has run: the model holds its clean weights and this handle is spent."""
        return self._restored

    @property
    def layout(self) -> ChipLayout:
        """Where each weight lives now: the arrays, the digital periphery, HPD's factors or digital outliers."""
        return self._holdings.layout

    def before_restore(self, function: Callable[[], None]) -> Callable[[], None]:
        """Call `function` when `restore()` begins (a calibration's removal); returns what cancels that."""
        self._before_restore.append(function)

        def cancel() -> None:
            if function in self._before_restore:
                self._before_restore.remove(function)

        return cancel

    def _require_live(self) -> None:
        if self._restored:
            raise RomerError("this chip was restored (its handle is spent); program the model again with "
                             "apply_noise_ for a new chip")

    def describe(self) -> dict:
        """The chip instance, for a record: its seed, its noise configuration and how it computes fused experts."""
        return {"seed": self.seed, "noise": self.config.model_dump(mode="json"), "experts_path": self.experts_path()}

    def backup_kind(self) -> str:
        """Where the clean weights wait: `memory` or `disk`."""
        return "memory" if isinstance(self._holdings.backup, MemoryBackup) else "disk"

    def program_of(self, name: str) -> TileProgram | None:
        """The tile program of one on-chip tensor (its scales, periphery errors and corrections), or None when it
        was not programmed (moved to the digital periphery)."""
        return self._programmer.programs.get(name)

    # ---- lookups -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Every tensor this chip holds, on the chip or moved to the digital periphery, in model order."""
        return self._holdings.names()

    def on_chip_names(self) -> list[str]:
        """The tensors held in conductances now (not moved to the digital periphery), in model order."""
        return self._holdings.on_chip_names()

    def is_digital(self, name: str, slot: int | None = None) -> bool:
        """Whether the tensor (or, with `slot`, that expert slot of a fused tensor) runs in the digital periphery."""
        return self._holdings.is_digital(name, slot)

    def role(self, name: str) -> str:
        """The tensor's role on the chip: router, experts, shared_experts, attention, dense_mlp or lm_head."""
        return self.tensor(name).role

    @property
    def total_parameters(self) -> int:
        """Every weight this chip was asked to hold, on the chip or moved to the digital periphery since."""
        return self._holdings.total_parameters()

    def shape(self, name: str) -> torch.Size:
        """The tensor's shape: [out, in] for a matrix of its own, [experts, out, in] for a fused expert tensor."""
        return self._holdings.originals[name].shape

    def size(self, name: str) -> int:
        """The tensor's weight count."""
        return self._holdings.originals[name].numel()

    def module_of(self, name: str) -> tuple[nn.Module, str]:
        """(module, attribute) that holds the tensor in the model."""
        tensor = self.tensor(name)
        return tensor.module, tensor.attribute

    def correction(self, name: str) -> ColumnCorrection | None:
        """The digital corrections after the tensor's ADCs, if any are attached."""
        return self._holdings.corrections.get(name)

    def corrected_names(self) -> list[str]:
        """The tensors with digital corrections attached, in the order they were attached."""
        return list(self._holdings.corrections)

    def programmed_target(self, name: str, slot: int | None = None) -> torch.Tensor | None:
        """The target weights a slot (or a tensor of its own) was re-programmed with, or None when it holds the
        model's own."""
        return self._holdings.targets.get((name, slot))

    def tensor(self, name: str) -> ChipTensor:
        """The chip's record of one tensor (its name, role, module and attribute)."""
        return self._holdings.tensor(name)

    def name_of(self, module: nn.Module, attribute: str) -> str | None:
        """The chip name of `module.attribute`, or None when it is not on the chip."""
        return self._holdings.name_of(module, attribute)

    def clean_value(self, name: str, slot: int | None = None) -> torch.Tensor:
        """The weights the chip was asked to hold in a tensor (or one slot of it), before noise."""
        return self._holdings.clean_value(name, slot)

    @property
    def on_chip_parameters(self) -> int:
        """The weights held in conductances now (a decomposed tensor's arrays hold U·Σ)."""
        return self._holdings.on_chip_parameters()

    def decomposed_names(self) -> list[str]:
        """The matrices held as HPD's factors whole (`decompose`); `decomposed_slots` gives a fused tensor's slots."""
        return list(self._holdings.factors)

    def decomposed_slots(self, name: str) -> list[int]:
        """The expert slots of a fused tensor held as HPD's factors (`decompose(name, slot=...)`)."""
        return sorted(self._holdings.layout.decomposed_slots_of(name))

    def factor_weights(self, name: str, slot: int | None = None) -> int:
        """The weights of the digital factor Vᵀ of a decomposed matrix, or (with `slot`) of one decomposed slot."""
        if slot is not None:
            return self._holdings.slot_factors[(name, slot)][1].numel()
        return self._holdings.factors[name][1].numel()

    def outlier_fraction(self, name: str) -> float:
        """The share of each scale segment of the tensor held in digital units as outliers (`split_outliers`)."""
        return self._holdings.layout.outlier_fraction(name)

    def outlier_weights(self, name: str | None = None) -> int:
        """The outlier weights held in digital units now, of one tensor or of every tensor still on the chip (a
        tensor or expert slot moved to the digital periphery whole holds none apart)."""
        return self._holdings.outlier_weights(name)

    def outlier_counts(self, name: str) -> dict[int | None, int]:
        """The outlier weights of one tensor held in digital units now, per expert slot (None: a tensor of its own);
        a slot moved to the digital periphery whole holds none apart."""
        return self._holdings.outlier_counts(name)

    def arrays_shape(self, name: str) -> tuple[int, int]:
        """[out, in] of what one matrix (one expert slot) of the tensor holds in conductances: the tensor's own, or a
        decomposed tensor's U·Σ."""
        return self._holdings.arrays_shape(name)

    @torch.no_grad()
    def read_out(self, name: str, slot: int | None, inputs: torch.Tensor) -> torch.Tensor:
        """What one on-chip matrix (one expert slot of a fused tensor) computes for `inputs` [n, in], read through the
        chip as it computes (its conductances, column periphery and, in analog mode, the tiles and ADCs), before any
        digital correction after its ADCs: how a deployed chip measures a probe. A read draws per-forward noise from
        the chip's streams as any forward pass does."""
        self._require_live()
        module, attribute = self.module_of(name)
        weight = getattr(module, attribute)
        plain = weight.as_subclass(torch.Tensor) if isinstance(weight, AnalogWeight) else weight
        matrix = plain if slot is None else plain[slot]
        if not isinstance(weight, AnalogWeight):  # moved to the digital periphery
            return torch.nn.functional.linear(inputs, matrix.to(inputs.dtype))
        return chip_linear(inputs, matrix, weight.program, slot)

    # ---- the forward path of fused experts ---------------------------------------------------
    def _choose_experts_path(self) -> None:
        self._experts.choose(self._holdings, self.config, self._programmer.per_forward)

    def use_eager_experts(self) -> None:
        """Fused expert kernels (grouped_mm) bypass F.linear, which carries the chip's per-forward effects and digital
        corrections; the eager path calls it once per expert. Restored with the chip."""
        self._experts.use_eager()

    def use_fused_chip_experts(self) -> None:
        """Keep the experts fused, their column offsets added per expert after the grouped product (fused_experts.py):
        for a weights-mode chip whose only per-forward effect is its offsets."""
        self._experts.use_fused_on_chip()

    def experts_path(self) -> str:
        """How this chip computes fused experts: `fused` (the model's own grouped kernel: no expert needs the chip per
        forward), `fused, offsets per expert` (romer_chip), or `eager` (one F.linear per expert)."""
        return self._experts.describe()

    # ---- what calibration may change ---------------------------------------------------------
    def attach_correction(self, name: str, correction: ColumnCorrection | None) -> None:
        """Set (or, with None, remove) the digital corrections after one tensor's ADCs; no conductance changes."""
        self._require_live()
        holdings, programmer = self._holdings, self._programmer
        tensor = self.tensor(name)
        if correction is None:
            holdings.corrections.pop(name, None)
        else:
            holdings.corrections[name] = correction
            if holdings.is_fused(name):
                self._choose_experts_path()
        if name in programmer.programs:
            programmer.programs[name].correction = correction
        if name not in holdings.layout.digital:
            programmer.wrap(tensor)

    @torch.no_grad()
    def reprogram_slot(self, name: str, slot: int | None, target: torch.Tensor | None) -> None:
        """Program new target weights into one slot's arrays (None: its original weights again).

        For a fused tensor `slot` is the expert index; for a tensor of its own it is None. The
        result is bit for bit what `apply_noise_` gives a model whose clean weights hold `target`
        there, because that slot draws from its own stream (seed, tensor, slot) either way."""
        self._require_live()
        holdings, programmer = self._holdings, self._programmer
        tensor = self.tensor(name)
        if target is None:
            holdings.targets.pop((name, slot), None)
        else:
            holdings.targets[(name, slot)] = target.detach().to("cpu", copy=True)
        if name in holdings.layout.digital:
            programmer.write_digital(tensor)
        elif slot is not None and name in programmer.programs:
            programmer.program_one_slot(tensor, slot)
        else:
            programmer.program_tensor(tensor)

    @torch.no_grad()
    def make_digital(self, name: str, digital: bool = True, slot: int | None = None) -> None:
        """Move one tensor (or, with `slot`, one expert slot of a fused tensor) to the digital periphery (its clean
        weights, no noise and no periphery errors), or back onto the chip. A slot moved back is programmed again from
        its own stream, so it holds the bits it held before."""
        self._require_live()
        holdings, programmer = self._holdings, self._programmer
        tensor = self.tensor(name)
        if slot is not None and not holdings.is_fused(name):
            raise RomerError(f"'{name}' is a matrix of its own, not a fused expert tensor; move it whole")
        holdings.layout = holdings.layout.with_digital(name, digital, slot)
        if slot is not None:
            if name in holdings.layout.digital:
                return
            if name in programmer.programs:
                programmer.programs[name].set_digital(slot, digital)
                programmer.program_one_slot(tensor, slot)
            return
        if digital:
            programmer.write_digital(tensor)
        else:
            programmer.program_tensor(tensor)

    @torch.no_grad()
    def split_outliers(self, name: str, fraction: float) -> None:
        """Program the tensor again with the ⌊fraction × segment size⌋ largest |w| of each scale segment held in
        digital units, exactly (`outliers.py`), or, with 0, whole again. The arrays draw the same noise from the same
        streams either way: only their targets, and so their scales, change."""
        self._require_live()
        holdings = self._holdings
        tensor = self.tensor(name)
        if name in holdings.factors or holdings.layout.decomposed_slots_of(name):
            raise RomerError(f"'{name}' is held as HPD's factors; split outliers of a plain matrix")
        if not 0 <= fraction < 1:
            raise RomerError(f"the outlier fraction must be in [0, 1), got {fraction}")
        holdings.layout = holdings.layout.with_outliers(name, fraction)
        if fraction <= 0:
            for key in [k for k in holdings.outliers if k[0] == name]:
                del holdings.outliers[key]
        if name not in holdings.layout.digital:
            self._programmer.program_tensor(tensor)

    @torch.no_grad()
    def decompose(self, name: str, decomposed: bool = True, slot: int | None = None) -> None:
        """HPD (Feng, Zhou et al. 2025): hold a matrix W [out, in] as its SVD factors, U·Σ [out, r] in the arrays and
        Vᵀ [r, in] in digital units (r = min(out, in), exact before noise); or, with False, as the plain matrix again.
        With `slot`, one expert slot of a fused tensor, its U·Σ in that slot's arrays from streams of its own; the
        slot's shape must hold U·Σ (out ≥ in, as a down projection's)."""
        self._require_live()
        holdings, programmer = self._holdings, self._programmer
        tensor = self.tensor(name)
        if slot is not None:
            self._decompose_slot(tensor, slot, decomposed)
            return
        if decomposed:
            if holdings.originals[name].dim() != 2:
                raise RomerError(f"'{name}' is a fused expert tensor; HPD decomposes matrices of their own")
            holdings.factors[name] = holdings.svd_factors(name)
        elif holdings.factors.pop(name, None) is not None:
            programmer.write_digital(tensor)  # the plain parameter back in the module
        holdings.layout = holdings.layout.with_decomposed(name, decomposed)
        if name not in holdings.layout.digital:
            programmer.program_tensor(tensor)

    def _decompose_slot(self, tensor: ChipTensor, slot: int, decomposed: bool) -> None:
        holdings, programmer, name = self._holdings, self._programmer, tensor.name
        if not holdings.is_fused(name):
            raise RomerError(f"'{name}' is a matrix of its own, not a fused expert tensor; decompose it whole")
        experts, out_dim, in_dim = holdings.originals[name].shape
        if not 0 <= slot < experts:
            raise RomerError(f"'{name}' has expert slots 0-{experts - 1}; slot {slot} does not exist")
        if decomposed and out_dim < in_dim:
            raise RomerError(f"'{name}' is [{out_dim}, {in_dim}] per slot: its U·Σ [{out_dim}, {out_dim}] does not fill "
                             f"the slot's arrays; decompose slots of a tensor with out ≥ in (a down projection)")
        if decomposed and holdings.layout.outlier_fraction(name) > 0:
            raise RomerError(f"'{name}' holds outliers in digital units; decompose slots of a tensor without them")
        if decomposed:
            holdings.slot_factors[(name, slot)] = holdings.svd_factors(name, slot)
        else:
            holdings.slot_factors.pop((name, slot), None)
        holdings.layout = holdings.layout.with_decomposed(name, decomposed, slot)
        self._choose_experts_path()
        if name in holdings.layout.digital:
            return
        if name in programmer.programs:
            programmer.program_one_slot(tensor, slot)
        else:
            programmer.program_tensor(tensor)

    # ---- lifetime ----------------------------------------------------------------------------
    @contextmanager
    def suspended(self) -> Iterator[None]:
        """The clean model (its software twin) for the duration of the block, then this chip again, bit for bit.
        The programmed weights wait in a second store of the backup's kind (host memory, or disk for a large CPU
        model): a copy each way instead of programming the chip again, which at scale costs far more."""
        self._require_live()
        holdings = self._holdings
        programmed = type(holdings.backup)()
        for tensor in holdings.tensors:  # a decomposed tensor is programmed again from its streams instead: the same bits
            if tensor.name not in holdings.layout.digital and tensor.name not in holdings.factors:
                programmed.save(tensor.name, holdings.originals[tensor.name])
        self._programmer.uninstall()
        try:
            yield
        finally:
            try:
                self._programmer.install(programmed)
            finally:
                programmed.close()

    @contextmanager
    def other_instance(self, seed: int, config: NoiseConfig | None = None) -> Iterator["ChipHandle"]:
        """Chip instance `seed` of this chip's configuration (or of `config`) and layout (what is digital, decomposed
        or outlier) in place of this one for the block (its own handle, restored on exit), then this chip again, bit
        for bit: a fit over many chip draws (retune-agnostic, ahwa-lora) visits them one at a time on the same
        model."""
        config = config or self.config
        with self.suspended():
            unseat(self.model, self)
            try:
                tensors = on_chip_tensors(self.model, config.roles)
                with ChipHandle.program(self.model, config, seed, tensors, backup_store(tensors),
                                        layout=self._holdings.layout) as other:
                    yield other
            finally:
                seat(self.model, self)

    @torch.no_grad()
    def move_to(self, condition) -> None:
        """Read this chip instance at another moment (`Condition`: time since programming, temperature). It keeps its
        programming errors, drift exponents and periphery draws, its layout and its digital corrections (fitted at
        another moment, as on a deployed chip); only drift, the accumulated read noise, the temperature shift,
        leakage and the ADC offsets' drift move. Bit for bit the chip `apply_noise_` programs at that condition."""
        self._require_live()
        config = condition.applied_to(self.config)
        if config == self.config:
            return
        if config.read_anchor_s is None and config.drift_time_s != self.config.drift_time_s:
            # the read noise sampled where the chip stood (its calibration) stays; a later read adds to it
            config = validated(config.model_dump() | {"read_anchor_s": self.config.drift_time_s})
        physics = DevicePhysics.from_config(config)
        per_forward = needs_forward_path(config, physics)
        changed_path = per_forward != self._programmer.per_forward
        self.config = config
        self._programmer.read_at(config, physics, per_forward)
        if changed_path:  # e.g. ADC offsets that appear as the die heats away from its trim
            self._choose_experts_path()
        self._programmer.reprogram_all()

    def condition(self) -> dict:
        """The moment the chip is read at: seconds since programming and °C."""
        return {"time_s": self.config.drift_time_s, "temperature_c": self.config.temperature_c}

    def restore(self) -> None:
        """The clean weights back, bit for bit; a calibration installed on this chip is removed first. The handle is
        spent: every later change is refused."""
        if self.restored:
            return
        programmer = self._programmer
        programmer.restoring = True
        try:
            while self._before_restore:
                self._before_restore.pop()()  # last installed, first removed (its chip-level undo programs nothing)
        except BaseException:
            programmer.restoring = False
            raise
        self._holdings.forget_calibration()
        programmer.uninstall()
        programmer.programs.clear()
        self._experts.reset()
        self._holdings.backup.close()
        self._restored = True
        unseat(self.model, self)

    def __enter__(self) -> "ChipHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
