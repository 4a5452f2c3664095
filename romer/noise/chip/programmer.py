"""Writes one chip's weights: programs each matrix (a fused expert tensor slot by slot) from its own random streams,
writes clean weights where the layout says digital, copies programmed weights back from a store, and puts each
tensor on the forward path it needs (a plain weight, or an `AnalogWeight` carrying its `TileProgram`)."""

from __future__ import annotations

import torch

from romer.noise.analog import AnalogWeight, TileProgram
from romer.noise.backup import DiskBackup, MemoryBackup
from romer.noise.chip.holdings import ChipHoldings
from romer.noise.config import NoiseConfig
from romer.noise.periphery import ColumnErrors
from romer.noise.physics import DevicePhysics
from romer.noise.programming import program_matrix, program_with_outliers, slot_workers
from romer.noise.roles import ChipTensor
from romer.resident import trim_heap


def needs_forward_path(config: NoiseConfig, physics: DevicePhysics) -> bool:
    """Whether a forward pass must see the chip (analog mode, read noise, periphery offsets or IR drop)."""
    return config.mode == "analog" or config.read_sigma > 0 or physics.periphery.per_forward


class ChipProgrammer:
    """The chip's writer at one moment (`config`, `physics`); `read_at` moves it to another. While `restoring`,
    programming is skipped: the clean weights are written next and would overwrite it."""

    def __init__(self, holdings: ChipHoldings, config: NoiseConfig, seed: int, physics: DevicePhysics,
                 per_forward: bool):
        self.holdings = holdings
        self.config, self.seed, self.physics, self.per_forward = config, seed, physics, per_forward
        self.programs: dict[str, TileProgram] = {}
        self.restoring = False

    def read_at(self, config: NoiseConfig, physics: DevicePhysics, per_forward: bool) -> None:
        self.config, self.physics, self.per_forward = config, physics, per_forward

    def program_slot(self, name: str, slot: int | None, device) -> tuple[torch.Tensor, torch.Tensor, ColumnErrors | None]:
        """(weights as the chip holds them, scales, periphery errors) of one matrix: a tensor of its own
        (slot None) or one expert slot of a fused tensor, each from its own streams."""
        holdings = self.holdings
        if slot is not None and (name, slot) in holdings.slot_factors:  # the slot's arrays hold U·Σ, from its own streams
            holdings.outliers.pop((name, slot), None)
            on_chip = holdings.slot_factors[(name, slot)][0]
            return program_matrix(self.physics, self.config, on_chip.to(device), self.seed, (name, slot, "factor"),
                                  device)
        key = (name,) if slot is None else (name, slot)
        target = holdings.clean_value(name, slot).to(device).float()
        noisy, scales, errors, digital = program_with_outliers(self.physics, self.config, target,
                                                               holdings.layout.outlier_fraction(name), self.seed, key,
                                                               device)
        if digital is None:
            holdings.outliers.pop((name, slot), None)
        else:
            holdings.outliers[(name, slot)] = digital
        return noisy, scales, errors

    def program_factor(self, tensor: ChipTensor) -> None:
        """A decomposed tensor: its arrays hold U·Σ [out, r], programmed from their own streams (seed, name,
        "factor"), with their own tiles and periphery; its inputs pass through the digital Vᵀ first."""
        if self.restoring:
            return
        holdings = self.holdings
        on_chip, digital = holdings.factors[tensor.name]
        device = holdings.originals[tensor.name].device
        noisy, scales, errors = program_matrix(self.physics, self.config, on_chip.to(device), self.seed,
                                               (tensor.name, "factor"), device)
        program = TileProgram(tensor.name, self.config, self.seed, scales, errors,
                              holdings.corrections.get(tensor.name), input_transform=digital.to(device))
        self.programs[tensor.name] = program
        weight = noisy.to(holdings.originals[tensor.name].dtype)
        tensor.module._parameters[tensor.attribute] = AnalogWeight.wrap(weight, program)

    def program_tensor(self, tensor: ChipTensor) -> None:
        if self.restoring:  # restore() writes every clean weight next: programming now would be thrown away
            return
        holdings = self.holdings
        if tensor.name in holdings.factors:
            self.program_factor(tensor)
            return
        param = holdings.originals[tensor.name]
        if param.dim() == 2:
            noisy, scales, errors = self.program_slot(tensor.name, None, param.device)
            param.copy_(noisy)
        else:
            @torch.no_grad()  # grad mode is per thread: the workers do not inherit the caller's
            def program(slot: int):
                noisy, slot_scales, slot_errors = self.program_slot(tensor.name, slot, param.device)
                param[slot].copy_(holdings.clean_value(tensor.name, slot) if holdings.is_digital(tensor.name, slot)
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
                                                 holdings.corrections.get(tensor.name),
                                                 digital_slots=holdings.layout.slots_of(tensor.name),
                                                 outliers=holdings.outliers_of(tensor.name),
                                                 slot_transforms={s: vt.to(param.device) for s, vt
                                                                  in holdings.slot_transforms_of(tensor.name).items()})
        self.wrap(tensor)

    def program_one_slot(self, tensor: ChipTensor, slot: int) -> None:
        """Re-program one expert slot of a programmed fused tensor; the other slots keep their arrays (the
        whole tensor again would cost a full programming per replaced expert at scale)."""
        if self.restoring:
            return
        holdings = self.holdings
        param = holdings.originals[tensor.name]
        noisy, scales, errors = self.program_slot(tensor.name, slot, param.device)
        param[slot].copy_(holdings.clean_value(tensor.name, slot) if holdings.is_digital(tensor.name, slot) else noisy)
        program = self.programs[tensor.name]
        program.set_slot(slot, scales, errors, holdings.outliers.get((tensor.name, slot)))
        factors = holdings.slot_factors.get((tensor.name, slot))
        was_factored = slot in program.slot_transforms
        if factors is None:
            program.slot_transforms.pop(slot, None)
        else:
            program.slot_transforms[slot] = factors[1].to(param.device)
        if was_factored != (factors is not None):  # a slot's factor comes or goes: the tensor's forward path may change
            self.wrap(tensor)

    def wrap(self, tensor: ChipTensor) -> None:
        """Route the tensor's products through `analog_linear` when a forward pass must see the chip (analog mode,
        read noise, periphery offsets) or a digital correction; otherwise it is an ordinary weight."""
        holdings = self.holdings
        if tensor.name in holdings.factors:
            self.programs[tensor.name].correction = holdings.corrections.get(tensor.name)
            return  # a decomposed tensor is always wrapped (its digital factor comes first)
        param = holdings.originals[tensor.name]
        factored = bool(holdings.slot_transforms_of(tensor.name))  # a slot's digital factor comes first
        if self.per_forward or tensor.name in holdings.corrections or factored:  # the wrapper shares the storage
            tensor.module._parameters[tensor.attribute] = AnalogWeight.wrap(param.detach(), self.programs[tensor.name])
        else:
            tensor.module._parameters[tensor.attribute] = param

    def write(self, tensor: ChipTensor, value_of) -> None:
        """`value_of(slot)` into the tensor, a fused one slot by slot (the scratch stays one expert's size)."""
        param = self.holdings.originals[tensor.name]
        for slot in range(param.shape[0]) if param.dim() > 2 else (None,):
            (param if slot is None else param[slot]).copy_(value_of(slot))

    def write_digital(self, tensor: ChipTensor) -> None:
        self.write(tensor, lambda slot: self.holdings.clean_value(tensor.name, slot))
        tensor.module._parameters[tensor.attribute] = self.holdings.originals[tensor.name]

    def reinstate(self, tensor: ChipTensor, programmed: MemoryBackup | DiskBackup) -> None:
        """The tensor's programmed weights back from `programmed`; its per-forward streams start again, as after
        programming."""
        self.write(tensor, lambda slot: programmed.load(tensor.name, slot))
        self.programs[tensor.name].calls = 0
        self.wrap(tensor)

    @torch.no_grad()
    def install(self, programmed: MemoryBackup | DiskBackup | None = None) -> None:
        """Every tensor onto the chip: digital ones clean, those `programmed` holds copied back, the rest programmed."""
        holdings = self.holdings
        for tensor in holdings.tensors:
            if tensor.name in holdings.layout.digital:
                self.write_digital(tensor)
            elif programmed is not None and tensor.name in programmed and tensor.name not in holdings.factors:
                self.reinstate(tensor, programmed)
            else:
                self.program_tensor(tensor)

    @torch.no_grad()
    def uninstall(self) -> None:
        """Every tensor back to the clean model's weights (replacement targets included)."""
        for tensor in self.holdings.tensors:
            self.write_digital(tensor)

    def reprogram_all(self) -> None:
        """Every tensor on the chip programmed again (a new moment): digital ones untouched."""
        for tensor in self.holdings.tensors:
            if tensor.name not in self.holdings.layout.digital:
                self.program_tensor(tensor)
