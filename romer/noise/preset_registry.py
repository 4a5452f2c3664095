"""The registry of named chips: a leaf, so that NoiseConfig can look a preset up and presets can build NoiseConfigs
without an import circle. The built-in presets are defined in romer/noise/presets.py and registered when
romer.noise is imported."""

from __future__ import annotations

from dataclasses import dataclass
from romer.errors import RomerError
from romer.registry import Registry, caller_module


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    sources: str
    config: object  # a romer.noise.config.NoiseConfig (not imported: this module is the leaf config.py reads)


PRESETS: Registry[Preset] = Registry("noise preset")


def register_preset(preset: Preset) -> Preset:
    """Add a preset; a name already registered is refused in one line naming both origins."""
    return PRESETS.add(preset.name, preset, caller_module())


def preset_names() -> list[str]:
    return PRESETS.names()


def get_preset(name: str) -> Preset:
    preset = PRESETS.get(name)
    if preset is None:
        raise RomerError(f"unknown noise preset '{name}'; choose one of {', '.join(preset_names())}, "
                         "or pass a .yaml file")
    return preset


def preset_config(name: str):
    """The preset's NoiseConfig."""
    return get_preset(name).config
