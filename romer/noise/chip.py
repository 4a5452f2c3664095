"""`apply_noise_`: program a model onto one simulated chip instance, in place.

    handle = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    ...                      # evaluate the noisy model
    handle.restore()         # the clean weights, bit for bit

    with romer.apply_noise_(model, config, seed=1):
        ...                  # restored on exit

Tensors are programmed one at a time (fused experts one slot at a time) in float32 and
rounded once to the model's dtype, from a random stream keyed by (seed, tensor name, slot):
the same seed gives the same bits, and one tensor's noise never depends on another's.
Where each weight lives (arrays, digital periphery, HPD's factors, digital outliers) is one
value, the chip's `ChipLayout` (`layout.py`); programming a matrix is `programming.py`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal
from weakref import WeakKeyDictionary

import torch
from torch import nn

from romer.errors import RomerError
from romer.noise.analog import AnalogWeight, TileProgram, chip_linear
from romer.noise.backup import DiskBackup, MemoryBackup
from romer.noise.config import NoiseConfig, validated
from romer.noise.digital import ColumnCorrection
from romer.noise.fused_experts import NAME as FUSED_ON_CHIP, fused_path_possible
from romer.noise.layout import ChipLayout
from romer.noise.outliers import DigitalOutliers
from romer.noise.periphery import ColumnErrors
from romer.noise.physics import DevicePhysics
from romer.noise.programming import program_matrix, program_with_outliers, slot_workers
from romer.noise.roles import ChipTensor, on_chip_tensors
from romer.resident import trim_heap

SMALL_BACKUP_BYTES = 256 * 2**20
_CHIPS: "WeakKeyDictionary[nn.Module, ChipHandle]" = WeakKeyDictionary()  # model → the chip it sits on


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


@dataclass
class ChipHandle:
    """One programmed chip instance of one model; `restore()` undoes it exactly.

    Calibration may re-program single expert slots (`reprogram_slot`: the slot's arrays take new
    target weights and, being programmed again, that slot's own fresh noise from the stream
    (seed, tensor, slot)), change the chip's layout (`make_digital`, `decompose`, `split_outliers`),
    set the digital corrections after a tensor's ADCs (`attach_correction`), or look at the clean
    model for a moment (`suspended`). Every change is undone exactly.

    A calibration installed on the chip registers its removal (`before_restore`): `restore()` removes
    it first, and a restored handle refuses every further change in one line.
    """

    model: nn.Module
    config: NoiseConfig
    seed: int
    tensors: list[ChipTensor]
    physics: DevicePhysics
    backup: MemoryBackup | DiskBackup
    per_forward: bool
    experts_implementation: str | None = None
    programs: dict[str, TileProgram] = field(default_factory=dict)
    originals: dict[str, nn.Parameter] = field(default_factory=dict)
    targets: dict[tuple[str, int | None], torch.Tensor] = field(default_factory=dict)
    corrections: dict[str, ColumnCorrection] = field(default_factory=dict)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # HPD: name → (U·Σ, Vᵀ)
    outliers: dict[tuple[str, int | None], DigitalOutliers] = field(default_factory=dict)  # their digital parts
    _layout: ChipLayout = field(default_factory=ChipLayout)
    _before_restore: list[Callable[[], None]] = field(default_factory=list)
    _restored: bool = field(default=False)
    _restoring: bool = field(default=False)  # inside restore(): undoing a calibration programs nothing (all is wiped)

    # ---- what calibration may ask ------------------------------------------------------------
    @property
    def restored(self) -> bool:
        """Whether `restore()` has run: the model holds its clean weights and this handle is spent."""
        return self._restored

    @property
    def layout(self) -> ChipLayout:
        """Where each weight lives now: the arrays, the digital periphery, HPD's factors or digital outliers."""
        return self._layout

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

    def names(self) -> list[str]:
        """Every tensor this chip holds, on the chip or moved to the digital periphery, in model order."""
        return [t.name for t in self.tensors]

    def on_chip_names(self) -> list[str]:
        """The tensors held in conductances now (not moved to the digital periphery), in model order."""
        return [t.name for t in self.tensors if t.name not in self._layout.digital]

    def is_digital(self, name: str, slot: int | None = None) -> bool:
        """Whether the tensor (or, with `slot`, that expert slot of a fused tensor) runs in the digital periphery."""
        return self._layout.is_digital(name, slot)

    def role(self, name: str) -> str:
        """The tensor's role on the chip: router, experts, shared_experts, attention, dense_mlp or lm_head."""
        return self.tensor(name).role

    @property
    def total_parameters(self) -> int:
        """Every weight this chip was asked to hold, on the chip or moved to the digital periphery since."""
        return sum(self.originals[t.name].numel() for t in self.tensors)

    def shape(self, name: str) -> torch.Size:
        """The tensor's shape: [out, in] for a matrix of its own, [experts, out, in] for a fused expert tensor."""
        return self.originals[name].shape

    def size(self, name: str) -> int:
        """The tensor's weight count."""
        return self.originals[name].numel()

    def module_of(self, name: str) -> tuple[nn.Module, str]:
        """(module, attribute) that holds the tensor in the model."""
        tensor = self.tensor(name)
        return tensor.module, tensor.attribute

    def correction(self, name: str) -> ColumnCorrection | None:
        """The digital corrections after the tensor's ADCs, if any are attached."""
        return self.corrections.get(name)

    def corrected_names(self) -> list[str]:
        """The tensors with digital corrections attached, in the order they were attached."""
        return list(self.corrections)

    def programmed_target(self, name: str, slot: int | None = None) -> torch.Tensor | None:
        """The target weights a slot (or a tensor of its own) was re-programmed with, or None when it holds the
        model's own."""
        return self.targets.get((name, slot))

    # ---- lookup ------------------------------------------------------------------------------
    def tensor(self, name: str) -> ChipTensor:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise RomerError(f"'{name}' is not on this chip")

    def name_of(self, module: nn.Module, attribute: str) -> str | None:
        """The chip name of `module.attribute`, or None when it is not on the chip."""
        for tensor in self.tensors:
            if tensor.module is module and tensor.attribute == attribute:
                return tensor.name
        return None

    def clean_value(self, name: str, slot: int | None = None) -> torch.Tensor:
        """The weights the chip was asked to hold in a tensor (or one slot of it), before noise."""
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

    @property
    def on_chip_parameters(self) -> int:
        """The weights held in conductances now (a decomposed tensor's arrays hold U·Σ)."""
        digital = self._layout.digital
        whole = sum(self.originals[t.name].numel() for t in self.tensors if t.name not in digital)
        factored = sum(self.originals[n].numel() - on_chip.numel() for n, (on_chip, _) in self.factors.items()
                       if n not in digital)
        return whole - factored - sum(self.originals[n][s].numel() for n, s in self._layout.digital_slots
                                      if n not in digital)

    def decomposed_names(self) -> list[str]:
        """The tensors held as HPD's factors (`decompose`)."""
        return list(self.factors)

    def factor_weights(self, name: str) -> int:
        """The weights of a decomposed tensor's digital factor Vᵀ."""
        return self.factors[name][1].numel()

    def outlier_fraction(self, name: str) -> float:
        """The share of each scale segment of the tensor held in digital units as outliers (`split_outliers`)."""
        return self._layout.outlier_fraction(name)

    def outlier_weights(self, name: str | None = None) -> int:
        """The outlier weights held in digital units now, of one tensor or of every tensor still on the chip (a
        tensor or expert slot moved to the digital periphery whole holds none apart)."""
        return sum(len(part) for (n, slot), part in self.outliers.items()
                   if (name is None or n == name) and not self._layout.is_digital(n, slot))

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

    def outlier_counts(self, name: str) -> dict[int | None, int]:
        """The outlier weights of one tensor held in digital units now, per expert slot (None: a tensor of its own);
        a slot moved to the digital periphery whole holds none apart."""
        return {slot: len(part) for (n, slot), part in self.outliers.items()
                if n == name and not self._layout.is_digital(n, slot)}

    def arrays_shape(self, name: str) -> tuple[int, int]:
        """[out, in] of what one matrix (one expert slot) of the tensor holds in conductances: the tensor's own, or a
        decomposed tensor's U·Σ."""
        if name in self.factors:
            on_chip = self.factors[name][0]
            return tuple(on_chip.shape[-2:])
        return tuple(self.originals[name].shape[-2:])

    # ---- programming -------------------------------------------------------------------------
    def _program_slot(self, name: str, slot: int | None, device) -> tuple[torch.Tensor, torch.Tensor, ColumnErrors | None]:
        """(weights as the chip holds them, scales, periphery errors) of one matrix: a tensor of its own
        (slot None) or one expert slot of a fused tensor, each from its own streams."""
        key = (name,) if slot is None else (name, slot)
        target = self.clean_value(name, slot).to(device).float()
        noisy, scales, errors, digital = program_with_outliers(self.physics, self.config, target,
                                                               self.outlier_fraction(name), self.seed, key, device)
        if digital is None:
            self.outliers.pop((name, slot), None)
        else:
            self.outliers[(name, slot)] = digital
        return noisy, scales, errors

    def _program_factor(self, tensor: ChipTensor) -> None:
        """A decomposed tensor: its arrays hold U·Σ [out, r], programmed from their own streams (seed, name,
        "factor"), with their own tiles and periphery; its inputs pass through the digital Vᵀ first."""
        if self._restoring:
            return
        on_chip, digital = self.factors[tensor.name]
        device = self.originals[tensor.name].device
        noisy, scales, errors = program_matrix(self.physics, self.config, on_chip.to(device), self.seed,
                                               (tensor.name, "factor"), device)
        program = TileProgram(tensor.name, self.config, self.seed, scales, errors, self.corrections.get(tensor.name),
                              input_transform=digital.to(device))
        self.programs[tensor.name] = program
        weight = noisy.to(self.originals[tensor.name].dtype)
        tensor.module._parameters[tensor.attribute] = AnalogWeight.wrap(weight, program)

    def _program_tensor(self, tensor: ChipTensor) -> None:
        if self._restoring:  # restore() writes every clean weight next: programming now would be thrown away
            return
        if tensor.name in self.factors:
            self._program_factor(tensor)
            return
        param = self.originals[tensor.name]
        if param.dim() == 2:
            noisy, scales, errors = self._program_slot(tensor.name, None, param.device)
            param.copy_(noisy)
        else:
            @torch.no_grad()  # grad mode is per thread: the workers do not inherit the caller's
            def program(slot: int):
                noisy, slot_scales, slot_errors = self._program_slot(tensor.name, slot, param.device)
                param[slot].copy_(self.clean_value(tensor.name, slot) if self.is_digital(tensor.name, slot)
                                  else noisy)
                del noisy
                trim_heap()  # the slot's scratch (8-32 MiB blocks) back to the system: the heap keeps it otherwise
                return slot_scales, slot_errors

            # a few slots at a time: the scratch is a few experts' size, and on a CPU the draws of one slot (a serial
            # generator each) overlap another's; each slot draws from its own streams, so the bits do not change
            with slot_workers(param.device) as pool:
                per_slot = list(pool.map(program, range(param.shape[0])))
            scales = torch.stack([s for s, _ in per_slot])
            errors = None if per_slot[0][1] is None else ColumnErrors.stack([e for _, e in per_slot])
        self.programs[tensor.name] = TileProgram(tensor.name, self.config, self.seed, scales, errors,
                                                 self.corrections.get(tensor.name),
                                                 digital_slots=self._layout.slots_of(tensor.name),
                                                 outliers={s: part for (n, s), part in self.outliers.items()
                                                           if n == tensor.name})
        self._wrap(tensor)

    def _program_one_slot(self, tensor: ChipTensor, slot: int) -> None:
        """Re-program one expert slot of a programmed fused tensor; the other slots keep their arrays (the
        whole tensor again would cost a full programming per replaced expert at scale)."""
        if self._restoring:
            return
        param = self.originals[tensor.name]
        noisy, scales, errors = self._program_slot(tensor.name, slot, param.device)
        param[slot].copy_(self.clean_value(tensor.name, slot) if self.is_digital(tensor.name, slot) else noisy)
        self.programs[tensor.name].set_slot(slot, scales, errors, self.outliers.get((tensor.name, slot)))

    def _wrap(self, tensor: ChipTensor) -> None:
        """Route the tensor's products through `analog_linear` when a forward pass must see the chip (analog mode,
        read noise, periphery offsets) or a digital correction; otherwise it is an ordinary weight."""
        if tensor.name in self.factors:
            self.programs[tensor.name].correction = self.corrections.get(tensor.name)
            return  # a decomposed tensor is always wrapped (its digital factor comes first)
        param = self.originals[tensor.name]
        if self.per_forward or tensor.name in self.corrections:  # the wrapper shares the parameter's storage
            tensor.module._parameters[tensor.attribute] = AnalogWeight.wrap(param.detach(), self.programs[tensor.name])
        else:
            tensor.module._parameters[tensor.attribute] = param

    def choose_experts_path(self) -> None:
        """Fused experts where the only per-forward effect is the column offsets (romer_chip), eager where a forward
        needs more of the chip; a chip with no expert on it keeps the model's own kernels."""
        fused_corrected = [n for n in self.corrections if self.originals.get(n) is not None
                           and self.originals[n].dim() == 3]
        if not (self.per_forward or fused_corrected) or not any(t.param.dim() == 3 for t in self.tensors):
            return
        c = self.config
        offsets_only = c.mode == "weights" and c.read_sigma * c.strength == 0 and c.ir_drop == 0
        # per-column gains and offsets after the ADCs stay per expert and column, as the offsets do; an adapter does not
        columns_only = all(self.corrections[n].down is None for n in fused_corrected)
        if offsets_only and columns_only and fused_path_possible(self.model):
            self.use_fused_chip_experts()
        else:
            self.use_eager_experts()

    def use_eager_experts(self) -> None:
        """Fused expert kernels (grouped_mm) bypass F.linear, which carries the chip's per-forward effects and digital
        corrections; the eager path calls it once per expert. Restored with the chip."""
        self._set_experts("eager")

    def use_fused_chip_experts(self) -> None:
        """Keep the experts fused, their column offsets added per expert after the grouped product (fused_experts.py):
        for a weights-mode chip whose only per-forward effect is its offsets."""
        self._set_experts(FUSED_ON_CHIP)

    def _set_experts(self, implementation: str) -> None:
        if not hasattr(self.model, "set_experts_implementation"):
            return
        if self.experts_implementation is None:
            self.experts_implementation = getattr(self.model.config, "_experts_implementation", None) or "eager"
        self.model.set_experts_implementation(implementation)

    def experts_path(self) -> str:
        """How this chip computes fused experts: `fused` (the model's own grouped kernel: no expert needs the chip per
        forward), `fused, offsets per expert` (romer_chip), or `eager` (one F.linear per expert)."""
        now = getattr(self.model.config, "_experts_implementation", None)
        if self.experts_implementation is None or now == self.experts_implementation:
            return "fused"
        return "fused, offsets per expert" if now == FUSED_ON_CHIP else "eager"

    def attach_correction(self, name: str, correction: ColumnCorrection | None) -> None:
        """Set (or, with None, remove) the digital corrections after one tensor's ADCs; no conductance changes."""
        self._require_live()
        tensor = self.tensor(name)
        if correction is None:
            self.corrections.pop(name, None)
        else:
            self.corrections[name] = correction
            if self.originals[name].dim() == 3:
                self.choose_experts_path()
        if name in self.programs:
            self.programs[name].correction = correction
        if name not in self._layout.digital:
            self._wrap(tensor)

    def _write(self, tensor: ChipTensor, value_of) -> None:
        """`value_of(slot)` into the tensor, a fused one slot by slot (the scratch stays one expert's size)."""
        param = self.originals[tensor.name]
        for slot in range(param.shape[0]) if param.dim() > 2 else (None,):
            (param if slot is None else param[slot]).copy_(value_of(slot))

    def _write_digital(self, tensor: ChipTensor) -> None:
        self._write(tensor, lambda slot: self.clean_value(tensor.name, slot))
        tensor.module._parameters[tensor.attribute] = self.originals[tensor.name]

    def _reinstate(self, tensor: ChipTensor, programmed: MemoryBackup | DiskBackup) -> None:
        """The tensor's programmed weights back from `programmed`; its per-forward streams start again, as after
        programming."""
        self._write(tensor, lambda slot: programmed.load(tensor.name, slot))
        self.programs[tensor.name].calls = 0
        self._wrap(tensor)

    @torch.no_grad()
    def _install(self, programmed: MemoryBackup | DiskBackup | None = None) -> None:
        """Every tensor onto the chip: digital ones clean, those `programmed` holds copied back, the rest programmed."""
        for tensor in self.tensors:
            if tensor.name in self._layout.digital:
                self._write_digital(tensor)
            elif programmed is not None and tensor.name in programmed and tensor.name not in self.factors:
                self._reinstate(tensor, programmed)
            else:
                self._program_tensor(tensor)

    @torch.no_grad()
    def _uninstall(self) -> None:
        """Every tensor back to the clean model's weights (replacement targets included)."""
        for tensor in self.tensors:
            self._write_digital(tensor)

    @torch.no_grad()
    def reprogram_slot(self, name: str, slot: int | None, target: torch.Tensor | None) -> None:
        """Program new target weights into one slot's arrays (None: its original weights again).

        For a fused tensor `slot` is the expert index; for a tensor of its own it is None. The
        result is bit for bit what `apply_noise_` gives a model whose clean weights hold `target`
        there, because that slot draws from its own stream (seed, tensor, slot) either way."""
        self._require_live()
        tensor = self.tensor(name)
        if target is None:
            self.targets.pop((name, slot), None)
        else:
            self.targets[(name, slot)] = target.detach().to("cpu", copy=True)
        if name in self._layout.digital:
            self._write_digital(tensor)
        elif slot is not None and name in self.programs:
            self._program_one_slot(tensor, slot)
        else:
            self._program_tensor(tensor)

    @torch.no_grad()
    def make_digital(self, name: str, digital: bool = True, slot: int | None = None) -> None:
        """Move one tensor (or, with `slot`, one expert slot of a fused tensor) to the digital periphery (its clean
        weights, no noise and no periphery errors), or back onto the chip. A slot moved back is programmed again from
        its own stream, so it holds the bits it held before."""
        self._require_live()
        tensor = self.tensor(name)
        if slot is not None and self.originals[name].dim() != 3:
            raise RomerError(f"'{name}' is a matrix of its own, not a fused expert tensor; move it whole")
        self._layout = self._layout.with_digital(name, digital, slot)
        if slot is not None:
            if name in self._layout.digital:
                return
            if name in self.programs:
                self.programs[name].set_digital(slot, digital)
                self._program_one_slot(tensor, slot)
            return
        if digital:
            self._write_digital(tensor)
        else:
            self._program_tensor(tensor)

    @torch.no_grad()
    def split_outliers(self, name: str, fraction: float) -> None:
        """Program the tensor again with the ⌊fraction × segment size⌋ largest |w| of each scale segment held in
        digital units, exactly (`outliers.py`), or, with 0, whole again. The arrays draw the same noise from the same
        streams either way: only their targets, and so their scales, change."""
        self._require_live()
        tensor = self.tensor(name)
        if name in self.factors:
            raise RomerError(f"'{name}' is held as HPD's factors; split outliers of a plain matrix")
        if not 0 <= fraction < 1:
            raise RomerError(f"the outlier fraction must be in [0, 1), got {fraction}")
        self._layout = self._layout.with_outliers(name, fraction)
        if fraction <= 0:
            for key in [k for k in self.outliers if k[0] == name]:
                del self.outliers[key]
        if name not in self._layout.digital:
            self._program_tensor(tensor)

    @torch.no_grad()
    def decompose(self, name: str, decomposed: bool = True) -> None:
        """HPD (Feng, Zhou et al. 2025): hold a matrix W [out, in] as its SVD factors, U·Σ [out, r] in the arrays and
        Vᵀ [r, in] in digital units (r = min(out, in), exact before noise); or, with False, as the plain matrix again."""
        self._require_live()
        tensor = self.tensor(name)
        if decomposed:
            if self.originals[name].dim() != 2:
                raise RomerError(f"'{name}' is a fused expert tensor; HPD decomposes matrices of their own")
            self.factors[name] = self._svd_factors(name)
        elif self.factors.pop(name, None) is not None:
            self._write_digital(tensor)  # the plain parameter back in the module
        self._layout = self._layout.with_decomposed(name, decomposed)
        if name not in self._layout.digital:
            self._program_tensor(tensor)

    def _svd_factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        u, sigma, vt = torch.linalg.svd(self.clean_value(name).double(), full_matrices=False)
        return (u * sigma).float(), vt.float()

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """The clean model (its software twin) for the duration of the block, then this chip again, bit for bit.
        The programmed weights wait in a second store of the backup's kind (host memory, or disk for a large CPU
        model): a copy each way instead of programming the chip again, which at scale costs far more."""
        self._require_live()
        programmed = type(self.backup)()
        for tensor in self.tensors:  # a decomposed tensor is programmed again from its streams instead: the same bits
            if tensor.name not in self._layout.digital and tensor.name not in self.factors:
                programmed.save(tensor.name, self.originals[tensor.name])
        self._uninstall()
        try:
            yield
        finally:
            try:
                self._install(programmed)
            finally:
                programmed.close()

    @contextmanager
    def other_instance(self, seed: int, config: NoiseConfig | None = None) -> Iterator["ChipHandle"]:
        """Chip instance `seed` of this chip's configuration (or of `config`) and layout (what is digital, decomposed
        or outlier) in place of this one for the block (its own handle, restored on exit), then this chip again, bit
        for bit: a fit over many chip draws (retune-agnostic, ahwa-lora) visits them one at a time on the same
        model."""
        with self.suspended():
            del _CHIPS[self.model]
            try:
                with apply_noise_(self.model, config or self.config, seed, layout=self._layout) as other:
                    yield other
            finally:
                _CHIPS[self.model] = self

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
        self.config, self.physics = config, DevicePhysics.from_config(config)
        per_forward = needs_forward_path(config, self.physics)
        if per_forward != self.per_forward:  # e.g. ADC offsets that appear as the die heats away from its trim
            self.per_forward = per_forward
            self.choose_experts_path()
        for tensor in self.tensors:
            if tensor.name not in self._layout.digital:
                self._program_tensor(tensor)

    def condition(self) -> dict:
        """The moment the chip is read at: seconds since programming and °C."""
        return {"time_s": self.config.drift_time_s, "temperature_c": self.config.temperature_c}

    def restore(self) -> None:
        """The clean weights back, bit for bit; a calibration installed on this chip is removed first. The handle is
        spent: every later change is refused."""
        if self.restored:
            return
        self._restoring = True
        try:
            while self._before_restore:
                self._before_restore.pop()()  # last installed, first removed (its chip-level undo programs nothing)
        except BaseException:
            self._restoring = False
            raise
        self.targets.clear()
        self._layout = ChipLayout()
        self.corrections.clear()
        self.factors.clear()
        self.outliers.clear()
        self._uninstall()
        self.programs.clear()
        if self.experts_implementation is not None:
            self.model.set_experts_implementation(self.experts_implementation)
        self.backup.close()
        self._restored = True
        if _CHIPS.get(self.model) is self:
            # the registry's key is weak but this handle, its value, holds the model: left in place, a model once
            # put on a chip would never be freed (at 16 OLMoE layers a second model then no longer fits)
            del _CHIPS[self.model]

    def __enter__(self) -> "ChipHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@torch.no_grad()
def apply_noise_(model: nn.Module, config: NoiseConfig, seed: int,
                 backup: Literal["auto", "memory", "disk"] = "auto", calibration=None,
                 layout: ChipLayout | None = None, at=None) -> ChipHandle:
    """Program `model` onto chip instance `seed` of the chip `config` describes, in place.

    `layout`: where weights live other than the arrays (`ChipLayout`); the parts that name tensors this chip does
    not hold are left out. `at`: the moment the chip is read at (`Condition`), over the configuration's own. `calibration`: a calibration loaded with the model (`romer.load_calibration`) whose
    layout and digital corrections this chip takes on; it answers `layout()`, `correction_items()` and
    `bind_chip(handle)`."""
    if not isinstance(config, NoiseConfig):
        raise RomerError("apply_noise_ needs a NoiseConfig; build one with NoiseConfig.preset(name)")
    if not isinstance(seed, int) or seed < 0:
        raise RomerError(f"the chip seed must be a non-negative integer, got {seed!r}")
    if chip_of(model) is not None:
        raise RomerError("this model already sits on a chip; restore() the previous handle first")
    if at is not None:
        config = at.applied_to(config)
    tensors = on_chip_tensors(model, config.roles)
    if backup == "auto":
        backup = choose_backup(tensors)
    store = MemoryBackup() if backup == "memory" else DiskBackup()
    physics = DevicePhysics.from_config(config)
    handle = ChipHandle(model, config, seed, tensors, physics, store, needs_forward_path(config, physics))
    handle.choose_experts_path()
    for tensor in tensors:
        handle.originals[tensor.name] = tensor.param
        store.save(tensor.name, tensor.param)
    placed = layout or ChipLayout()
    if calibration is not None:
        placed = placed.merged(calibration.layout())
        handle.corrections |= {n: c for n, c in calibration.correction_items() if n in handle.originals}
    handle._layout = placed.restricted_to({name: param.dim() for name, param in handle.originals.items()})
    handle.factors = {name: handle._svd_factors(name) for name in sorted(handle._layout.decomposed)}
    if handle.corrections:
        handle.choose_experts_path()  # again, now that the carried corrections are known
    handle._install()
    _CHIPS[model] = handle
    if calibration is not None:
        calibration.bind_chip(handle)
    return handle


def needs_forward_path(config: NoiseConfig, physics: DevicePhysics) -> bool:
    """Whether a forward pass must see the chip (analog mode, read noise, periphery offsets or IR drop)."""
    return config.mode == "analog" or config.read_sigma > 0 or physics.periphery.per_forward


def chip_of(model: nn.Module) -> ChipHandle | None:
    """The chip `model` sits on now, or None."""
    handle = _CHIPS.get(model)
    return handle if handle is not None and not handle.restored else None
