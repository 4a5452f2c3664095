"""`NoiseConfig`: one validated, serialisable description of a simulated analog CIM chip.

Conductances are in microsiemens (µS), temperatures in °C, times in seconds. A relative
quantity says what it is relative to. Build one from a named preset, with overrides:

    NoiseConfig.preset("cim-80c", sigma_dev=0.05)
    parse_noise_spec("cim-80c:sigma_dev=0.05,mode=analog")   # the CLI's --noise
    parse_noise_spec("my-chip.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from romer.assignments import parse_assignments, scalar
from romer.errors import RomerError
from romer.noise.preset_registry import preset_config
from romer.validation import OneLineErrors, build

ROLES = ("attention", "dense_mlp", "experts", "shared_experts", "router", "lm_head")
DEFAULT_ROLES = ("attention", "dense_mlp", "experts", "shared_experts", "router")


class NoiseConfig(OneLineErrors):
    """Every knob of the simulated chip; see `romer presets` for the named settings."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)
    _noun: ClassVar[str] = "noise field"
    _where_listed: ClassVar[str] = "`romer presets` lists the fields"

    name: str = Field("custom", description="preset this config came from")
    mode: Literal["weights", "analog"] = Field(
        "weights", description="weights: perturb stored weights once (fast); analog: also simulate DAC/ADC per tile")
    strength: float = Field(
        1.0, ge=0, le=10, description="multiplies every random spread (device-to-device, temperature, leakage, drift "
                                      "exponent, read and ADC noise, ADC offsets and gains); 1.2 is 20 % stronger "
                                      "noise, 0 leaves only the deterministic effects (drift means, IR drop)")
    roles: tuple[str, ...] = Field(DEFAULT_ROLES, description=f"module roles mapped onto the chip, of {', '.join(ROLES)}")

    # crossbar mapping
    tile_rows: int = Field(256, ge=1, le=65536, description="crossbar inputs (word lines) per tile")
    tile_cols: int = Field(256, ge=1, le=65536, description="crossbar outputs (bit lines) per tile")
    scaling: Literal["tile", "column"] = Field(
        "column", description="weight range mapped to g_max per tile, or per output column within a tile")
    g_max_us: float = Field(25.0, gt=0, description="µS, conductance that the largest |weight| maps to")

    # programming (device-to-device) variation, fixed per chip instance
    sigma_dev: float = Field(0.0, ge=0, description="programming noise std, relative to g_max (constant in g)")
    prog_coeffs_us: Optional[tuple[float, ...]] = Field(
        None, description="µS, programming std as a polynomial c0 + c1·(g/g_max) + c2·(g/g_max)² …; "
                          "replaces sigma_dev when set")

    # temperature: conductance shift relative to the programming temperature
    temperature_c: float = Field(25.0, ge=-60, le=200, description="°C, operating temperature")
    reference_c: float = Field(25.0, ge=-60, le=200, description="°C, temperature at which the chip was programmed")
    temp_shift_per_c: float = Field(0.0, ge=-0.05, le=0.05,
                                    description="mean relative conductance change per °C above reference")
    temp_spread_per_c: float = Field(0.0, ge=0, le=0.05,
                                     description="device-to-device std of the relative change, per °C")
    leak_ref_us: float = Field(0.0, ge=0, description="µS, mean off-state (leakage) conductance per device at reference_c")
    leak_doubling_c: float = Field(10.0, gt=0, description="°C per doubling of the leakage conductance")
    leak_spread: float = Field(0.0, ge=0, le=3, description="lognormal cell-to-cell spread (σ of ln) of the leakage")

    # power-law drift g(t) = g(t0)·(t/t0)^-nu (PCM), and accumulated 1/f read noise at that time
    drift_time_s: float = Field(0.0, ge=0, description="s, time from programming to inference (0: no drift)")
    drift_t0_s: float = Field(20.0, gt=0, description="s, first read after programming (drift reference)")
    drift_nu: Literal["none", "constant", "pcm"] = Field(
        "none", description="drift exponent model: constant (nu_mean ± nu_std) or pcm (level-dependent fit)")
    nu_mean: float = Field(0.0, ge=0, le=1, description="mean drift exponent (drift_nu=constant)")
    nu_std: float = Field(0.0, ge=0, le=1, description="device-to-device std of the drift exponent")
    read_1f: bool = Field(False, description="add the accumulated 1/f read noise of PCM at drift_time_s")
    read_anchor_s: Optional[float] = Field(None, ge=0, description="s since programming at which this chip's "
                                           "accumulated read noise was sampled (the moment it was calibrated at); a "
                                           "later read adds an independent increment (None: drift_time_s itself)")
    drift_compensation: bool = Field(
        True, description="rescale each tensor by its measured mean conductance loss (global drift compensation)")

    # retention and relaxation at drift_time_s (flash charge loss, ReRAM relaxation), in decades of effective time
    retention_per_decade: float = Field(0.0, ge=0, le=0.2, description="mean relative conductance loss per decade of "
                                        "time since programming (flash charge loss; 0: off)")
    retention_spread: float = Field(0.0, ge=0, le=3, description="cell-to-cell spread of that loss, relative to its "
                                                                 "mean")
    relax_us_per_decade: float = Field(0.0, ge=0, description="µS, std of the conductance random walk per √decade "
                                                              "of time since programming (ReRAM relaxation; 0: off)")
    retention_t0_s: float = Field(1.0, gt=0, description="s, the verify read retention and relaxation start from")
    retention_ea_ev: float = Field(1.1, ge=0, le=3, description="eV, Arrhenius activation energy that speeds "
                                                                "retention loss and relaxation above reference_c")

    # device effects that plugins register (romer/noise/effects.py); the built-in effects read the fields above
    effects: dict[str, dict] = Field(default_factory=dict, description="options of device effects registered by "
                                     "plugins: effect name → the mapping of options its build reads")

    # per-forward effects
    read_sigma: float = Field(0.0, ge=0, description="read noise std per forward, relative to g_max (0: off)")
    dac_bits: int = Field(8, ge=1, le=32, description="analog mode: input DAC resolution, bits")
    adc_bits: int = Field(8, ge=1, le=32, description="output ADC resolution, bits (analog mode quantises; "
                                                     "both modes measure ADC offsets in its LSB)")
    adc_full_scale: float = Field(
        8.0, gt=0, description="output ADC range ±U, in units of one full-scale input on one g_max device")
    sigma_adc: float = Field(0.0, ge=0, description="analog mode: ADC noise std per output, relative to U")

    # the periphery of each output column, fixed per chip instance (romer/noise/periphery.py)
    adc_offset_sigma: float = Field(0.0, ge=0, le=1000, description="LSB of the output ADC, std of each ADC's fixed "
                                                                    "offset left after trimming at reference_c")
    adc_offset_per_c: float = Field(0.0, ge=0, le=10, description="LSB per °C, extra offset std per °C away from "
                                                                  "reference_c (offsets move with heat after the trim)")
    adc_gain_sigma: float = Field(0.0, ge=0, le=0.5, description="relative std of each output ADC's fixed gain")
    adc_group: int = Field(1, ge=1, le=65536, description="adjacent columns of a tile that share one ADC and so "
                                                          "share its offset and gain (1: one ADC per column)")
    ir_drop: float = Field(0.0, ge=0, le=100, description="IR-drop strength along each tile's lines, in IBM aihwkit's "
                                                          "form (0: off; 1: aihwkit's nominal)")

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}")
        return tuple(roles)

    @field_validator("effects")
    @classmethod
    def _registered_effects(cls, effects: dict[str, dict]) -> dict[str, dict]:
        from romer.noise.effects import checked_options

        return {name: checked_options(name, options) for name, options in effects.items()}

    @field_validator("prog_coeffs_us")
    @classmethod
    def _non_empty(cls, coeffs):
        if coeffs is not None and len(coeffs) == 0:
            raise ValueError("give at least one coefficient, or leave it unset")
        return coeffs

    @model_validator(mode="after")
    def _drift_needs_time(self) -> "NoiseConfig":
        if self.drift_nu != "none" and self.drift_time_s == 0:
            raise ValueError("drift_nu is set but drift_time_s is 0; set a time since programming")
        if self.read_anchor_s is not None and self.read_anchor_s > self.drift_time_s:
            raise ValueError(f"a read at {self.drift_time_s:g} s is before this chip's read anchor at "
                             f"{self.read_anchor_s:g} s (the moment it was calibrated); read it at or after that")
        return self

    @classmethod
    def from_aihwkit_lightning(cls, rpu_config, **overrides) -> "NoiseConfig":
        """The chip an aihwkit-lightning `TorchInferenceRPUConfig` (or a mapping of its fields) describes, where the two
        simulators overlap (romer/noise/aihwkit_lightning.py); a peer field romer cannot honour is a one-line error."""
        from romer.noise.aihwkit_lightning import from_aihwkit_lightning

        return validated(from_aihwkit_lightning(rpu_config) | overrides)

    def to_aihwkit_lightning(self) -> dict:
        """The aihwkit-lightning fields of this chip, as a nested dict; a field the peer lacks is a one-line error."""
        from romer.noise.aihwkit_lightning import to_aihwkit_lightning

        return to_aihwkit_lightning(self)

    def scaled(self, factor: float) -> "NoiseConfig":
        """The same chip with `factor` times this config's strength (the ±20 % sensitivity checks)."""
        return validated(self.model_dump() | {"strength": self.strength * factor})

    @classmethod
    def preset(cls, name: str, **overrides) -> "NoiseConfig":
        return validated(preset_config(name).model_dump() | overrides)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "NoiseConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as error:
            raise RomerError(f"cannot read noise file {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise RomerError(f"noise file {path} is not valid YAML ({type(error).__name__}); fix its syntax") from None
        if not isinstance(data, dict):
            raise RomerError(f"noise file {path} must be a mapping of field: value")
        base, peer = data.pop("preset", None), data.pop("aihwkit_lightning", None)
        if peer is not None:  # the fields of an aihwkit-lightning TorchInferenceRPUConfig, nested as the peer nests them
            if base:
                raise RomerError(f"noise file {path} names both a preset and aihwkit_lightning fields; keep one")
            return NoiseConfig.from_aihwkit_lightning(peer, **data)
        return NoiseConfig.preset(base, **data) if base else validated(data)


def validated(fields: dict) -> NoiseConfig:
    """A NoiseConfig, or a one-line RomerError naming the first bad field."""
    return build(NoiseConfig, fields, "noise field", "`romer presets` lists the fields")


def parse_noise_spec(spec: str) -> NoiseConfig:
    """`NAME`, `FILE.yaml`, either followed by `:key=value,key=value` overrides.

    A YAML file holds field: value pairs and may name a `preset:` to start from. Roles inside a
    spec are joined by `+` (`roles=experts+router`); polynomials need a YAML file.
    """
    base, _, rest = spec.partition(":")
    overrides = parse_assignments(rest, f"cannot read '{{item}}' in --noise {spec}; write NAME:key=value,key=value",
                                  lambda key, raw: tuple(raw.split("+")) if key == "roles" else scalar(key, raw))
    if base.endswith((".yaml", ".yml")):
        return validated(NoiseConfig.from_yaml(base).model_dump() | overrides)
    return NoiseConfig.preset(base, **overrides)
