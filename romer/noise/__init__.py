"""Analog CIM noise: NoiseConfig and presets, device physics, and apply_noise_ with exact restore."""

from romer.noise.chip import ChipHandle, apply_noise_, chip_of
from romer.noise.condition import Condition
from romer.noise.config import NoiseConfig, parse_noise_spec
from romer.noise.presets import Preset, get_preset, preset_names, register_preset

__all__ = ["ChipHandle", "Condition", "NoiseConfig", "Preset", "apply_noise_", "chip_of", "get_preset", "parse_noise_spec",
           "preset_names", "register_preset"]
