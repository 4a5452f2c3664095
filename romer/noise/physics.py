"""One chip instance of one matrix: map to conductances, apply every device effect, map back.

Programming draws from the matrix's own stream; every effect that time or temperature changes (temperature, drift,
accumulated read noise) draws from a stream of its own beside it. So the same chip read at another moment keeps its
programming errors, its per-device drift exponents and its cell-to-cell temperature response: only what the moment
changes moves (`ChipHandle.move_to`): temperature, drift, accumulated read noise, retention and relaxation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from romer.noise.config import NoiseConfig
from romer.noise.devices import AccumulatedReadNoise, PowerLawDrift, ProgrammingNoise, Retention, TemperatureShift
from romer.noise.mapping import ConductanceMapping
from romer.noise.periphery import AdcGain, AdcOffset, ColumnPeriphery, IrDrop


@dataclass(frozen=True)
class DevicePhysics:
    mapping: ConductanceMapping
    programming: ProgrammingNoise
    temperature: TemperatureShift
    drift: PowerLawDrift
    read_1f: AccumulatedReadNoise
    compensation: bool
    periphery: ColumnPeriphery
    retention: Retention

    @classmethod
    def from_config(cls, c: NoiseConfig) -> "DevicePhysics":
        k = c.strength
        coeffs = tuple(k * x for x in c.prog_coeffs_us) if c.prog_coeffs_us is not None else None
        return cls(
            mapping=ConductanceMapping(c.tile_rows, c.tile_cols, c.g_max_us, per_column=c.scaling == "column"),
            programming=ProgrammingNoise(c.g_max_us, k * c.sigma_dev, coeffs),
            temperature=TemperatureShift(c.temperature_c, c.reference_c, c.temp_shift_per_c, k * c.temp_spread_per_c,
                                         c.leak_ref_us, c.leak_doubling_c, k * c.leak_spread),
            drift=PowerLawDrift(c.g_max_us, c.drift_time_s, c.drift_t0_s, c.drift_nu, c.nu_mean, k * c.nu_std),
            read_1f=AccumulatedReadNoise(c.g_max_us, c.drift_time_s, c.drift_t0_s, c.read_1f, k,
                                         anchor_s=c.read_anchor_s),
            compensation=c.drift_compensation,
            periphery=ColumnPeriphery(
                offset=AdcOffset(k * c.adc_offset_sigma, k * c.adc_offset_per_c, c.temperature_c - c.reference_c),
                gain=AdcGain(k * c.adc_gain_sigma), ir_drop=IrDrop(c.ir_drop, c.g_max_us),
                tile_cols=c.tile_cols, adc_group=c.adc_group),
            retention=Retention(c.drift_time_s, c.retention_t0_s, k * c.retention_per_decade, c.retention_spread,
                                k * c.relax_us_per_decade, c.temperature_c, c.reference_c, c.retention_ea_ev),
        )

    @property
    def perturbs_weights(self) -> bool:
        return any(e.active for e in (self.programming, self.temperature, self.drift, self.read_1f, self.retention))

    def program(self, weight: torch.Tensor, streams: Callable[[str], torch.Generator] | torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights as the chip holds them, per-column-per-tile scales) for one float32 matrix [out, in];
        `streams(effect)` is the random stream of one effect ("programming", "temperature", "drift", "read_1f"),
        or one generator that every effect draws from in turn."""
        if isinstance(streams, torch.Generator):
            generator = streams
            streams = lambda effect: generator  # noqa: E731
        scales = self.mapping.scales(weight)
        if not self.perturbs_weights:
            return weight, scales
        g = torch.stack(self.mapping.to_conductances(weight, scales))  # [2, out, in]: g⁺ and g⁻ devices
        target = g
        if self.programming.active:
            g = self.programming.apply(g, streams("programming"))
        programmed = (g[0] - g[1]).abs().sum()
        if self.temperature.active:
            g = self.temperature.apply(g, streams("temperature"))
        if self.drift.active:
            g = self.drift.apply(g, streams("drift"), target=target)
        if self.read_1f.active:
            renewal = (streams(f"read_1f renewal {self.read_1f.anchor_s!r}->{self.read_1f.time_s!r}")
                       if self.read_1f.renews else None)
            g = self.read_1f.apply(g, streams("read_1f"), renewal)
        if self.retention.active:
            g = self.retention.apply(g, streams("retention"))
        now = (g[0] - g[1]).abs().sum()
        if self.compensation and now > 0:
            # One gain per tensor from a reference read of the differential outputs, right after
            # programming and now (global drift compensation); leakage common to a pair cancels there.
            g = g * (programmed / now)
        return self.mapping.to_weights(g[0], g[1], scales), scales
