"""The bridge to IBM aihwkit-lightning's `TorchInferenceRPUConfig` (MIT; `pip install 'romer[aihwkit]'`).

    config = NoiseConfig.from_aihwkit_lightning(rpu_config)     # the peer's object, or its fields as a dict
    fields = config.to_aihwkit_lightning()                      # the peer's fields, as a nested dict

The peer's forward (`TorchLinear.linear`, its eval and train modes) and romer's analog mode meet here:

| aihwkit-lightning                                   | romer                                                    |
|-----------------------------------------------------|----------------------------------------------------------|
| `mapping.max_input_size` (≤ 0: one slice)           | `tile_rows` (65,536: one tile)                           |
| `pre_post.input_range` dynamic                      | the DAC's range is each token's max abs input, always    |
| `forward.inp_res` = 2^b − 2 states (≤ 0: off)       | `dac_bits` = b (32: practically continuous)              |
| `forward.out_res` = 2^b − 2 states (≤ 0: off)       | `adc_bits` = b                                           |
| `forward.out_bound` = U (≤ 0: none)                 | `adc_full_scale` = U (none: `tile_rows`, the largest sum a tile can make) |
| bound per channel (`clip.type` …PerChannel) or per slice (`None`) | `scaling` = column or tile (`tile_cols` 65,536)  |
| `forward.out_noise` = σ (train mode)                | `sigma_adc` = σ / U (per tile; the peer divides by √slices) |
| `modifier.noise_type` AddNormal[PerChannel], `std_dev` s (train mode) | `read_sigma` = s / √2 (each device of a pair reads with it) |

Where the two differ by design (tests/test_peer_aihwkit.py measures each): the peer takes a dynamic input
range per slice of the input, romer one per token for all its tiles (one DAC range per input vector); the
peer's output noise is σ/√slices per slice, romer's ADC noise σ·U per tile (each tile has its own ADCs).
For a layer of one tile the two agree exactly. The peer's input-range learning fields (`learn_input_range`, `init_*`, `decay`, `input_min_percentage`,
`act_range_momentum`) and `modifier.enable_during_test` steer training only: with dynamic ranges its forward
reads none of them, and neither does romer. romer's device physics (programming noise with idle devices
clamped at zero, drift, temperature, periphery errors) has no peer field: `to_aihwkit_lightning` refuses a
config that uses it. A peer field romer cannot honour (static input ranges, weight clipping or weight
quantisation, a noise scaling that disagrees with the bound's) is a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import math
from enum import Enum

from romer.errors import RomerError

ONE_TILE = 65536          # romer's largest tile: "no slicing" on the peer's side
CONTINUOUS_BITS = 32      # romer's finest DAC/ADC: "no quantisation" on the peer's side
PER_CHANNEL_CLIPS = ("LayerGaussianPerChannel",)
DEFAULTS = {
    "forward": {"inp_res": -1, "out_noise": 0.0, "out_noise_per_channel": False, "out_bound": 0.0, "out_res": -1},
    "clip": {"sigma": -1.0, "type": "None"},
    "modifier": {"std_dev": 0.0, "res": 0.0, "enable_during_test": False, "type": "None", "noise_type": "None",
                 "quantization_type": "None"},
    "mapping": {"max_input_size": -1},
    "pre_post": {"input_range": {"fast_mode": False, "act_range_momentum": 0.95, "enable": False, "dynamic": False,
                                 "learn_input_range": True, "init_value": 3.0, "init_from_data": 100,
                                 "init_std_alpha": 3.0, "decay": 0.001, "input_min_percentage": 0.95}},
}


def _plain(value):
    """The peer's dataclasses and enums as plain dicts and strings (a YAML of its fields reads the same)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


def peer_fields(rpu_config) -> dict:
    """Every field of a `TorchInferenceRPUConfig` (or a nested dict of some of them), defaults filled in."""
    given = _plain(rpu_config)
    if not isinstance(given, dict):
        raise RomerError("an aihwkit-lightning config is a TorchInferenceRPUConfig or a mapping of its fields "
                         "(forward, clip, modifier, mapping, pre_post)")

    def merged(defaults: dict, values: dict, path: str) -> dict:
        out = dict(defaults)
        for key, value in values.items():
            if key not in defaults:
                raise RomerError(f"aihwkit-lightning field '{path}{key}' is unknown to romer's bridge (aihwkit-lightning "
                                 "2.1.0's fields); remove it")
            out[key] = merged(defaults[key], value, f"{path}{key}.") if isinstance(defaults[key], dict) else value
        return out

    return merged(DEFAULTS, given, "")


def _bits(states: float, field: str) -> int:
    """b from a number of states 2^b − 2 (or its inverse, the peer's other spelling); ≤ 0: continuous."""
    if states <= 0:
        return CONTINUOUS_BITS
    states = 1 / states if states < 1 else states
    bits = math.log2(states + 2)
    if abs(bits - round(bits)) > 1e-9 or not 1 <= round(bits) <= CONTINUOUS_BITS:
        raise RomerError(f"aihwkit-lightning field '{field}' = {states:g} states has no romer equivalent: romer's "
                         "converters have 2^b − 2 states (b = 1…32 bits), e.g. 254 for 8 bits")
    return int(round(bits))


def _refuse(field: str, why: str) -> None:
    raise RomerError(f"aihwkit-lightning field '{field}' has no romer equivalent: {why}")


def from_aihwkit_lightning(rpu_config) -> dict:
    """NoiseConfig fields for a peer config (see the module's table); the caller builds the NoiseConfig."""
    peer = peer_fields(rpu_config)
    forward, clip, modifier, ranges = peer["forward"], peer["clip"], peer["modifier"], peer["pre_post"]["input_range"]
    quantises = forward["inp_res"] > 0 or forward["out_res"] > 0 or forward["out_bound"] > 0 or forward["out_noise"] > 0
    if ranges["enable"]:
        if ranges["fast_mode"]:
            _refuse("pre_post.input_range.fast_mode", "it clips inputs to a learned static range; romer's DAC range "
                                                      "is each token's max abs input (set dynamic=True)")
        if not ranges["dynamic"]:
            _refuse("pre_post.input_range.dynamic", "a static (learned) input range; romer's DAC range is each "
                                                    "token's max abs input (set dynamic=True)")
    elif quantises:
        _refuse("pre_post.input_range.enable", "the peer quantises without an input range only in error; enable "
                                               "dynamic input ranges")
    if forward["out_res"] > 0 and forward["out_bound"] <= 0:
        _refuse("forward.out_bound", "the peer quantises outputs only within a bound; give out_bound > 0")
    if clip["type"] not in ("None",) + PER_CHANNEL_CLIPS:
        _refuse("clip.type", f"{clip['type']!r} clips or learns weight ranges; romer maps each column's (or tile's) "
                             "largest weight to g_max without clipping")
    if clip["sigma"] > 0:
        _refuse("clip.sigma", "romer does not clip weights")
    if modifier["type"] != "None":
        _refuse("modifier.type", f"{modifier['type']!r}; romer's weight noise is read noise (modifier.noise_type)")
    if modifier["quantization_type"] != "None":
        _refuse("modifier.quantization_type", "romer holds weights as analog conductances, not on a weight grid")
    per_channel = clip["type"] in PER_CHANNEL_CLIPS
    if forward["out_noise"] > 0 and forward["out_noise_per_channel"] != per_channel:
        _refuse("forward.out_noise_per_channel", "romer's ADC noise is relative to the full scale of the column "
                                                 "(or tile), the same range as the output bound: set it to "
                                                 f"{per_channel} with clip.type {clip['type']!r}")
    if modifier["noise_type"] not in ("None", "AddNormal", "AddNormalPerChannel"):
        _refuse("modifier.noise_type", f"{modifier['noise_type']!r}")
    if modifier["noise_type"] != "None" and (modifier["noise_type"] == "AddNormalPerChannel") != per_channel:
        _refuse("modifier.noise_type", "romer's read noise is relative to the weight range of the column (or tile), "
                                       "the same range as the output bound: use "
                                       f"{'AddNormalPerChannel' if per_channel else 'AddNormal'} with clip.type "
                                       f"{clip['type']!r}")
    tile_rows = peer["mapping"]["max_input_size"] if peer["mapping"]["max_input_size"] > 0 else ONE_TILE
    bound = forward["out_bound"] if forward["out_bound"] > 0 else float(tile_rows)
    fields = {"name": "aihwkit-lightning", "mode": "analog" if quantises else "weights", "tile_rows": tile_rows,
              "tile_cols": ONE_TILE, "scaling": "column" if per_channel else "tile",
              "dac_bits": _bits(forward["inp_res"], "forward.inp_res"),
              "adc_bits": _bits(forward["out_res"], "forward.out_res"), "adc_full_scale": bound,
              "sigma_adc": forward["out_noise"] / bound,
              "read_sigma": modifier["std_dev"] / math.sqrt(2) if modifier["noise_type"] != "None" else 0.0}
    return fields


# the NoiseConfig fields the peer has an equivalent for; every other field must be at the ideal chip's value
MAPPED = ("name", "mode", "tile_rows", "tile_cols", "scaling", "dac_bits", "adc_bits", "adc_full_scale", "sigma_adc",
          "read_sigma", "roles", "drift_compensation", "g_max_us", "strength")


def to_aihwkit_lightning(config) -> dict:
    """The peer's fields for a NoiseConfig whose every effect the peer has; a field it lacks is a one-line error."""
    ideal = type(config)()
    for name in type(config).model_fields:
        if name not in MAPPED and getattr(config, name) != getattr(ideal, name):
            raise RomerError(f"noise field '{name}' has no aihwkit-lightning equivalent (the peer models no device "
                             "physics or periphery errors); set it to its default to export this chip")
    if config.scaling == "tile" and config.tile_cols < ONE_TILE:
        raise RomerError(f"noise field 'tile_cols' = {config.tile_cols}: the peer's per-slice range spans every output; "
                         f"set tile_cols={ONE_TILE} to export a tile-scaled chip")
    analog = config.mode == "analog"
    per_channel = config.scaling == "column"
    states = lambda bits: 2 ** bits - 2 if analog and bits < CONTINUOUS_BITS else -1  # noqa: E731
    # no bound: an ADC that neither quantises nor clips what a tile can sum (the peer bounds every quantiser)
    unbounded = config.adc_full_scale >= config.tile_rows and config.adc_bits >= CONTINUOUS_BITS
    forward = {"inp_res": states(config.dac_bits), "out_res": states(config.adc_bits),
               "out_bound": 0.0 if unbounded or not analog else config.adc_full_scale,
               "out_noise": config.sigma_adc * config.strength * config.adc_full_scale if analog else 0.0,
               "out_noise_per_channel": per_channel if analog and config.sigma_adc > 0 else False}
    modifier = dict(DEFAULTS["modifier"])
    if config.read_sigma > 0:
        modifier |= {"noise_type": "AddNormalPerChannel" if per_channel else "AddNormal",
                     "std_dev": config.read_sigma * config.strength * math.sqrt(2)}
    ranges = dict(DEFAULTS["pre_post"]["input_range"]) | ({"enable": True, "dynamic": True} if analog else {})
    return {"forward": forward, "clip": {"sigma": -1.0, "type": "LayerGaussianPerChannel" if per_channel else "None"},
            "modifier": modifier, "mapping": {"max_input_size": config.tile_rows if config.tile_rows < ONE_TILE else -1},
            "pre_post": {"input_range": ranges}}


def rpu_config(config):
    """The peer's `TorchInferenceRPUConfig` for a NoiseConfig (needs aihwkit-lightning installed)."""
    try:
        from aihwkit_lightning.simulator.configs import (TorchInferenceRPUConfig, WeightClipType,
                                                         WeightNoiseInjectionType, WeightQuantizationType)
    except ImportError:
        raise RomerError("aihwkit-lightning is not installed: pip install 'romer[aihwkit]'") from None
    fields = to_aihwkit_lightning(config)
    out = TorchInferenceRPUConfig()
    for group in ("forward", "mapping"):
        for key, value in fields[group].items():
            setattr(getattr(out, group), key, value)
    for key, value in fields["pre_post"]["input_range"].items():
        setattr(out.pre_post.input_range, key, value)
    out.clip.sigma, out.clip.type = fields["clip"]["sigma"], WeightClipType(fields["clip"]["type"])
    modifier = fields["modifier"]
    out.modifier.std_dev, out.modifier.res = modifier["std_dev"], modifier["res"]
    out.modifier.noise_type = WeightNoiseInjectionType(modifier["noise_type"])
    out.modifier.quantization_type = WeightQuantizationType(modifier["quantization_type"])
    return out
