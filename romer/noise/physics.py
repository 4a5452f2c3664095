"""One chip instance of one matrix: map to conductances, apply every device effect, map back.

Programming draws from the matrix's own stream; every effect that time or temperature changes (temperature, drift,
accumulated read noise) draws from a stream of its own beside it. So the same chip read at another moment keeps its
programming errors, its per-device drift exponents and its cell-to-cell temperature response: only what the moment
changes moves (`ChipHandle.move_to`): temperature, drift, accumulated read noise, retention and relaxation.
The effects and their order come from the registry (romer/noise/effects.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import romer.noise.devices  # noqa: F401  (the built-in device effects register at import)
from romer.noise.config import NoiseConfig
from romer.noise.effects import DeviceEffect, Effect, EffectInputs, device_effects
from romer.noise.mapping import ConductanceMapping
from romer.noise.periphery import AdcGain, AdcOffset, ColumnPeriphery, IrDrop


@dataclass(frozen=True)
class DevicePhysics:
    """The mapping onto conductances, the chain of device effects (in registry order, romer/noise/effects.py),
    global drift compensation, and the periphery of each output column."""

    mapping: ConductanceMapping
    effects: tuple[tuple[DeviceEffect, Effect], ...]
    compensation: bool
    periphery: ColumnPeriphery

    @classmethod
    def from_config(cls, c: NoiseConfig) -> "DevicePhysics":
        k = c.strength
        return cls(
            mapping=ConductanceMapping(c.tile_rows, c.tile_cols, c.g_max_us, per_column=c.scaling == "column"),
            effects=tuple((entry, entry.build(c)) for entry in device_effects()),
            compensation=c.drift_compensation,
            periphery=ColumnPeriphery(
                offset=AdcOffset(k * c.adc_offset_sigma, k * c.adc_offset_per_c, c.temperature_c - c.reference_c),
                gain=AdcGain(k * c.adc_gain_sigma), ir_drop=IrDrop(c.ir_drop, c.g_max_us),
                tile_cols=c.tile_cols, adc_group=c.adc_group),
        )

    def effect(self, name: str) -> Effect | None:
        """The named effect of this chip's chain (None: no such effect registered)."""
        return next((effect for entry, effect in self.effects if entry.name == name), None)

    @property
    def perturbs_weights(self) -> bool:
        return any(effect.active for _, effect in self.effects)

    def program(self, weight: torch.Tensor, streams: Callable[[str], torch.Generator] | torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights as the chip holds them, per-column-per-tile scales) for one float32 matrix [out, in];
        `streams(effect)` is the random stream of one effect (its registered name), or one generator that every
        effect draws from in turn."""
        if isinstance(streams, torch.Generator):
            generator = streams
            streams = lambda effect: generator  # noqa: E731
        scales = self.mapping.scales(weight)
        if not self.perturbs_weights:
            return weight, scales
        g = torch.stack(self.mapping.to_conductances(weight, scales))  # [2, out, in]: g⁺ and g⁻ devices
        inputs = EffectInputs(target=g, stream=streams)
        programmed = None
        for entry, effect in self.effects:
            if entry.stage == "moment" and programmed is None:
                programmed = (g[0] - g[1]).abs().sum()
            if effect.active:
                g = effect.act(g, inputs)
        if programmed is None:
            programmed = (g[0] - g[1]).abs().sum()
        now = (g[0] - g[1]).abs().sum()
        if self.compensation and now > 0:
            # One gain per tensor from a reference read of the differential outputs, right after
            # programming and now (global drift compensation); leakage common to a pair cancels there.
            g = g * (programmed / now)
        return self.mapping.to_weights(g[0], g[1], scales), scales
