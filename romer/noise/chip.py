"""`apply_noise_`: program a model onto one simulated chip instance, in place.

    handle = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    ...                      # evaluate the noisy model
    handle.restore()         # the clean weights, bit for bit

    with romer.apply_noise_(model, config, seed=1):
        ...                  # restored on exit

Tensors are programmed one at a time (fused experts one slot at a time) in float32 and
rounded once to the model's dtype, from a random stream keyed by (seed, tensor name, slot):
the same seed gives the same bits, and one tensor's noise never depends on another's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from romer.errors import RomerError
from romer.noise.analog import AnalogWeight, TileProgram
from romer.noise.backup import DiskBackup, MemoryBackup
from romer.noise.config import NoiseConfig
from romer.noise.physics import DevicePhysics
from romer.noise.roles import ChipTensor, on_chip_tensors
from romer.noise.streams import stream

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


@dataclass
class ChipHandle:
    """One programmed chip instance of one model; `restore()` undoes it exactly."""

    model: nn.Module
    config: NoiseConfig
    seed: int
    tensors: list[ChipTensor]
    programs: dict[str, TileProgram]
    originals: dict[str, nn.Parameter]
    backup: MemoryBackup | DiskBackup
    experts_implementation: str | None = None
    restored: bool = field(default=False)

    def restore(self) -> None:
        if self.restored:
            return
        with torch.no_grad():
            for tensor in self.tensors:
                original = self.originals[tensor.name]
                original.copy_(self.backup.load(tensor.name))
                tensor.module._parameters[tensor.attribute] = original
        if self.experts_implementation is not None:
            self.model.set_experts_implementation(self.experts_implementation)
        self.backup.close()
        self.restored = True

    def __enter__(self) -> "ChipHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def _program_in_place(param: torch.Tensor, name: str, physics: DevicePhysics, seed: int) -> torch.Tensor:
    """Overwrite one tensor with its programmed weights (3-D: slot by slot); returns its scales."""
    if param.dim() == 2:
        noisy, scales = physics.program(param.float(), stream(seed, name, device=param.device))
        param.copy_(noisy)
        return scales
    scales = []
    for slot in range(param.shape[0]):
        noisy, slot_scales = physics.program(param[slot].float(), stream(seed, name, slot, device=param.device))
        param[slot].copy_(noisy)
        scales.append(slot_scales)
    return torch.stack(scales)


@torch.no_grad()
def apply_noise_(model: nn.Module, config: NoiseConfig, seed: int,
                 backup: Literal["auto", "memory", "disk"] = "auto") -> ChipHandle:
    """Program `model` onto chip instance `seed` of the chip `config` describes, in place."""
    if not isinstance(config, NoiseConfig):
        raise RomerError("apply_noise_ needs a NoiseConfig; build one with NoiseConfig.preset(name)")
    if not isinstance(seed, int) or seed < 0:
        raise RomerError(f"the chip seed must be a non-negative integer, got {seed!r}")
    current = getattr(model, "_romer_chip", None)
    if current is not None and not current.restored:
        raise RomerError("this model already sits on a chip; restore() the previous handle first")
    tensors = on_chip_tensors(model, config.roles)
    if backup == "auto":
        backup = choose_backup(tensors)
    store = MemoryBackup() if backup == "memory" else DiskBackup()
    physics = DevicePhysics.from_config(config)
    per_forward = config.mode == "analog" or config.read_sigma > 0
    previous_impl = None
    if per_forward and hasattr(model, "set_experts_implementation"):
        # fused-expert kernels bypass F.linear; the eager path calls it once per expert
        previous_impl = getattr(model.config, "_experts_implementation", None) or "eager"
        model.set_experts_implementation("eager")
    programs: dict[str, TileProgram] = {}
    originals: dict[str, nn.Parameter] = {}
    for tensor in tensors:
        param = originals[tensor.name] = tensor.param
        store.save(tensor.name, param)
        scales = _program_in_place(param, tensor.name, physics, seed)
        if per_forward:  # the wrapper shares the parameter's storage: no second copy
            programs[tensor.name] = TileProgram(tensor.name, config, seed, scales)
            tensor.module._parameters[tensor.attribute] = AnalogWeight.wrap(param.detach(), programs[tensor.name])
    handle = ChipHandle(model, config, seed, tensors, programs, originals, store, previous_impl)
    model._romer_chip = handle
    return handle
