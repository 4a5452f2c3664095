"""Device physics acting on conductances (µS). Each class is one effect, with units and source.

Every method takes the random generator to draw from, so a chip instance is a pure function
of (seed, tensor name, expert slot). Each class registers itself as a device effect (romer/noise/effects.py):
`from_config` builds it from a NoiseConfig, `act` applies it in the chain with its own named stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from romer.noise.effects import EffectInputs, register_device_effect

if TYPE_CHECKING:
    from romer.noise.config import NoiseConfig


@dataclass(frozen=True)
class ProgrammingNoise:
    """Write-and-verify leaves each device off its target: g = max(0, g_t + σ(g_t)·ε), ε ~ N(0, 1).

    σ(g_t) = Σ_i c_i·(g_t/g_max)^i µS (`prog_coeffs_us`), or σ_dev·g_max (constant). The
    polynomial form and the PCM coefficients (0.26348, 1.9650, −1.1731 µS at g_max = 25 µS)
    are Nandakumar et al., ICECS 2019, as published in IBM aihwkit's PCM model. Fixed for the
    life of one programming: one chip instance. A device cannot go below zero conductance, so
    the idle device of a differential pair (target 0) errs only upwards (half-normal): on
    average this pulls every weight slightly towards zero, as on a real chip.
    """

    g_max_us: float
    sigma_dev: float = 0.0
    coeffs_us: tuple[float, ...] | None = None

    @property
    def active(self) -> bool:
        return bool(self.coeffs_us) or self.sigma_dev > 0

    def sigma_us(self, g_target: torch.Tensor) -> torch.Tensor:
        if self.coeffs_us is None:
            return torch.full_like(g_target, self.sigma_dev * self.g_max_us)
        relative = g_target / self.g_max_us
        return sum(c * relative**i for i, c in enumerate(self.coeffs_us)).clamp(min=0)

    def apply(self, g: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        noise = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        return (g + self.sigma_us(g) * noise).clamp(min=0)

    @classmethod
    def from_config(cls, c: "NoiseConfig") -> "ProgrammingNoise":
        coeffs = tuple(c.strength * x for x in c.prog_coeffs_us) if c.prog_coeffs_us is not None else None
        return cls(c.g_max_us, c.strength * c.sigma_dev, coeffs)

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        return self.apply(g, inputs.stream("programming"))


@dataclass(frozen=True)
class TemperatureShift:
    """A device programmed at T_ref and read at T, ΔT = T − T_ref, ε ~ N(0, 1) per device:

    g·(1 + κ·ΔT + β·ΔT·ε) + L(T)·exp(s·ε' − s²/2), clamped at 0.

    κ (`temp_shift_per_c`) is the mean relative change per °C and β (`temp_spread_per_c`) its
    cell-to-cell spread: cells programmed alike respond differently to heat, so heat adds random
    variation, not only a shift that one rescale could undo. L(T) = L_ref·2^(ΔT / doubling) is the
    off-state (leakage) conductance, which roughly doubles every `leak_doubling_c` °C in FET-based
    cells; it flows through both devices of a pair, so its mean cancels and its lognormal
    cell-to-cell spread s (`leak_spread`) does not.
    """

    temperature_c: float
    reference_c: float
    shift_per_c: float
    spread_per_c: float
    leak_ref_us: float = 0.0
    leak_doubling_c: float = 10.0
    leak_spread: float = 0.0

    @property
    def active(self) -> bool:
        return self.temperature_c != self.reference_c and (
            self.shift_per_c != 0 or self.spread_per_c > 0 or self.leak_ref_us > 0)

    def leakage_us(self) -> float:
        return self.leak_ref_us * 2 ** ((self.temperature_c - self.reference_c) / self.leak_doubling_c)

    def apply(self, g: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        delta = self.temperature_c - self.reference_c
        noise = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        shifted = g * (1 + self.shift_per_c * delta + self.spread_per_c * delta * noise)
        if self.leak_ref_us > 0:
            # leakage beyond what was present (and verified against) at the programming temperature
            extra = self.leakage_us() - self.leak_ref_us
            spread = self.leak_spread
            cells = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
            shifted = shifted + extra * torch.exp(spread * cells - spread**2 / 2)
        return shifted.clamp(min=0)

    @classmethod
    def from_config(cls, c: "NoiseConfig") -> "TemperatureShift":
        k = c.strength
        return cls(c.temperature_c, c.reference_c, c.temp_shift_per_c, k * c.temp_spread_per_c, c.leak_ref_us,
                   c.leak_doubling_c, k * c.leak_spread)

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        return self.apply(g, inputs.stream("temperature"))


@dataclass(frozen=True)
class PowerLawDrift:
    """Structural relaxation: g(t) = g(t0)·(t/t0)^(−ν), ν drawn per device.

    `pcm`: ν ~ N(μ(g), σ(g)) with μ = clip(−0.0155·ln(g/g_max) + 0.0244, 0.049, 0.1) and
    σ = clip(−0.0125·ln(g/g_max) − 0.0059, 0.008, 0.045), |ν| taken (the PCM drift statistics
    of Nandakumar et al. 2019 as published in aihwkit). `constant`: ν ~ N(nu_mean, nu_std).
    t0 = 20 s is aihwkit's first-read time.
    """

    g_max_us: float
    time_s: float
    t0_s: float
    model: str
    nu_mean: float = 0.0
    nu_std: float = 0.0

    @property
    def active(self) -> bool:
        return self.model != "none" and self.time_s > 0

    def exponents(self, g: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        noise = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        if self.model == "pcm":
            log_relative = torch.log((g / self.g_max_us).clamp(min=1e-7))
            mean = (-0.0155 * log_relative + 0.0244).clamp(0.049, 0.1)
            std = (-0.0125 * log_relative - 0.0059).clamp(0.008, 0.045)
            return (mean + std * noise).abs()
        return (self.nu_mean + self.nu_std * noise).abs()

    def apply(self, g: torch.Tensor, rng: torch.Generator, target: torch.Tensor | None = None) -> torch.Tensor:
        """`target`: the conductances the devices were programmed towards; ν is drawn from them, as aihwkit draws it
        from the target conductance (so heat and programming errors do not change a device's exponent)."""
        t = self.time_s + self.t0_s
        return g * (t / self.t0_s) ** (-self.exponents(g if target is None else target, rng))

    @classmethod
    def from_config(cls, c: "NoiseConfig") -> "PowerLawDrift":
        return cls(c.g_max_us, c.drift_time_s, c.drift_t0_s, c.drift_nu, c.nu_mean, c.strength * c.nu_std)

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        return self.apply(g, inputs.stream("drift"), target=inputs.target)


@dataclass(frozen=True)
class AccumulatedReadNoise:
    """PCM 1/f read noise accumulated up to the read at time t:
    g + |g|·Q_s(g)·sqrt(ln((t + t_read)/(2·t_read)))·ε, Q_s = min(0.0088/(g/g_max)^0.65, 0.2),
    t_read = 250 ns (Nandakumar et al. 2019 via aihwkit).

    A chip read again later (`anchor_s`, the moment its noise was sampled: its calibration) keeps that sample and adds
    an independent increment of variance σ(t)² − σ(a)², drawn from a stream of its own keyed by (a, t): most of the
    variance added between 1 h and 1 y is new, as in aihwkit, which draws afresh at every read time, while nothing
    changes at the anchor itself."""

    g_max_us: float
    time_s: float
    t0_s: float
    enabled: bool
    scale: float = 1.0  # NoiseConfig.strength
    t_read_s: float = 250e-9
    anchor_s: float | None = None

    @property
    def active(self) -> bool:
        return self.enabled and self.time_s > 0 and self.scale > 0

    @property
    def renews(self) -> bool:
        """Whether this read adds an increment to the one sampled at the anchor."""
        return self.anchor_s is not None and self.time_s > self.anchor_s

    def log_term(self, time_s: float) -> float:
        t = time_s + self.t0_s
        return math.log((t + self.t_read_s) / (2 * self.t_read_s))

    def apply(self, g: torch.Tensor, rng: torch.Generator, renewal: torch.Generator | None = None) -> torch.Tensor:
        q_s = (0.0088 / (g / self.g_max_us).pow(0.65).clamp(min=1e-3)).clamp(max=0.2)
        noise = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        if not self.renews:
            sigma = q_s * math.sqrt(self.log_term(self.time_s))
            return (g + g.abs() * self.scale * sigma * noise).clamp(min=0)
        if renewal is None:
            raise ValueError("a read after the anchor needs the renewal stream")
        anchored, now = self.log_term(self.anchor_s), self.log_term(self.time_s)
        increment = torch.randn(g.shape, generator=renewal, device=g.device, dtype=g.dtype)
        total = math.sqrt(anchored) * noise + math.sqrt(now - anchored) * increment
        return (g + g.abs() * self.scale * q_s * total).clamp(min=0)

    @classmethod
    def from_config(cls, c: "NoiseConfig") -> "AccumulatedReadNoise":
        return cls(c.g_max_us, c.drift_time_s, c.drift_t0_s, c.read_1f, c.strength, anchor_s=c.read_anchor_s)

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        renewal = inputs.stream(f"read_1f renewal {self.anchor_s!r}->{self.time_s!r}") if self.renews else None
        return self.apply(g, inputs.stream("read_1f"), renewal)


BOLTZMANN_EV = 8.617333262e-5  # eV/K


@dataclass(frozen=True)
class Retention:
    """Charge loss (flash) and conductance relaxation (ReRAM) after the verify read, in decades of effective time.

    With t_eff = t·exp(E_a/k·(1/T_ref − 1/T)) (Arrhenius: heat speeds both, T in K) and D = log10(1 + t_eff/t0),
    ε, ε' ~ N(0, 1) per device:

    g·(1 − ρ·D·(1 + s·ε)) + σ_r·√D·ε', clamped at 0.

    ρ (`retention_per_decade`) is the mean relative loss per decade and s (`retention_spread`) its cell-to-cell
    spread; σ_r (`relax_us_per_decade`, µS) the std of a random walk that grows as √D. Global drift compensation
    (when on) removes the mean loss and leaves the spread.
    """

    time_s: float
    t0_s: float
    per_decade: float
    spread: float
    relax_us: float
    temperature_c: float
    reference_c: float
    ea_ev: float

    @property
    def active(self) -> bool:
        return self.time_s > 0 and (self.per_decade > 0 or self.relax_us > 0)

    def decades(self) -> float:
        kelvin = lambda c: c + 273.15  # noqa: E731
        speedup = math.exp(self.ea_ev / BOLTZMANN_EV * (1 / kelvin(self.reference_c) - 1 / kelvin(self.temperature_c)))
        return math.log10(1 + self.time_s * speedup / self.t0_s)

    def apply(self, g: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        decades = self.decades()
        loss = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        walk = torch.randn(g.shape, generator=rng, device=g.device, dtype=g.dtype)
        g = g * (1 - self.per_decade * decades * (1 + self.spread * loss))
        return (g + self.relax_us * math.sqrt(decades) * walk).clamp(min=0)

    @classmethod
    def from_config(cls, c: "NoiseConfig") -> "Retention":
        k = c.strength
        return cls(c.drift_time_s, c.retention_t0_s, k * c.retention_per_decade, c.retention_spread,
                   k * c.relax_us_per_decade, c.temperature_c, c.reference_c, c.retention_ea_ev)

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        return self.apply(g, inputs.stream("retention"))


register_device_effect("programming", ProgrammingNoise.from_config, order=100, stage="programming")
register_device_effect("temperature", TemperatureShift.from_config, order=200)
register_device_effect("drift", PowerLawDrift.from_config, order=300)
register_device_effect("read_1f", AccumulatedReadNoise.from_config, order=400)
register_device_effect("retention", Retention.from_config, order=500)
