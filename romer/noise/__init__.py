"""Analog CIM noise: NoiseConfig and presets, device physics, and apply_noise_ with exact restore."""

from romer.noise.chip import ChipHandle, apply_noise_, chip_of
from romer.noise.condition import Condition
from romer.noise.config import NoiseConfig, parse_noise_spec
from romer.noise.effects import EffectInputs, options_of, register_device_effect, unregister_device_effect
from romer.noise.presets import Preset, get_preset, preset_names, register_preset

__all__ = ["ChipHandle", "Condition", "EffectInputs", "NoiseConfig", "Preset", "apply_noise_", "chip_of", "get_preset",
           "options_of", "parse_noise_spec", "preset_names", "register_device_effect", "register_preset",
           "unregister_device_effect"]
