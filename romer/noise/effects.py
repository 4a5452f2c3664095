"""Device effects, registered: what acts on a matrix's conductances between programming and a read.

Each effect has a place in the chain and draws from a random stream of its own, named after it, so adding one
changes no other effect's draws. `DevicePhysics` builds the chain from this registry: a new effect is one file that
registers itself (docs/architecture.md, "To add a device effect"; docs/examples/stuck_devices.py). An effect is
registered with

- `build(config) -> effect`: the effect of one chip from its `NoiseConfig`, an object with `active` (bool) and
  `act(g, inputs) -> g`, where g is the [2, out, in] tensor of the differential pairs' conductances (µS);
- `order`: its place in the chain, ascending (the built-ins: programming 100, temperature 200, drift 300,
  read_1f 400, retention 500);
- `stage`: "programming" (fixed for the life of one programming; global drift compensation takes its reference
  read after these) or "moment" (what time and temperature change: drawn again when the chip is moved);
- `options`: a pydantic model of the effect's own parameters (each with its unit and source).

A plugin's parameters live in `NoiseConfig.effects[name]`, checked against its `options` model when the config is
built (a bad value is refused in one line naming the field); `build` reads them with `options_of(config, name)`.
A name there that no effect registered is refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import torch

from pydantic import BaseModel, ValidationError

from romer.registry import Registry, caller_module
from romer.validation import one_line

Build = Callable[[Any], "Effect"]  # NoiseConfig → the effect of one chip (typed loosely: config.py imports this module)


@dataclass(frozen=True)
class EffectInputs:
    """What every effect of one matrix may read besides the conductances it acts on."""

    target: torch.Tensor  # [2, out, in] µS: the conductances the devices were programmed towards
    stream: Callable[[str], torch.Generator]  # the matrix's random stream of that name (an effect's own name)


class Effect(Protocol):
    @property
    def active(self) -> bool: ...

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor: ...


Stage = Literal["programming", "moment"]


@dataclass(frozen=True)
class DeviceEffect:
    name: str
    build: Build
    order: float
    stage: Stage
    options: type[BaseModel] | None = None


DEVICE_EFFECTS: Registry[DeviceEffect] = Registry("device effect")


def register_device_effect(name: str, build: Build, order: float, stage: Stage = "moment",
                           options: type[BaseModel] | None = None) -> DeviceEffect:
    """Add an effect to every chip's chain; a name already registered is refused in one line naming both origins."""
    if stage not in ("programming", "moment"):
        raise ValueError(f"stage must be 'programming' or 'moment', not {stage!r}")
    return DEVICE_EFFECTS.add(name, DeviceEffect(name, build, float(order), stage, options), caller_module())


def unregister_device_effect(name: str) -> None:
    DEVICE_EFFECTS.remove(name)


def device_effects() -> list[DeviceEffect]:
    """Every registered effect, in chain order."""
    return sorted((DEVICE_EFFECTS.get(name) for name in DEVICE_EFFECTS), key=lambda effect: effect.order)


def device_effect_names() -> list[str]:
    return [effect.name for effect in device_effects()]


def checked_options(name: str, options: dict) -> dict:
    """`options` of the effect `name` as its options model reads them; a ValueError in one line otherwise (an
    unregistered name, an effect without options, a bad value)."""
    entry = DEVICE_EFFECTS.get(name)
    if entry is None:
        raise ValueError(f"no device effect {name!r} is registered (effects are {', '.join(device_effect_names())}); "
                         "import the plugin that registers it first (docs/architecture.md)")
    if entry.options is None:
        raise ValueError(f"the device effect {name!r} takes no options here (the built-in effects read NoiseConfig's "
                         "own fields)")
    if not isinstance(options, dict):
        raise ValueError(f"the options of {name!r} must be a mapping of option: value")
    try:
        return entry.options(**options).model_dump()
    except ValidationError as error:
        raise ValueError(one_line(error, f"{name} option", f"the options of {name!r} are "
                                  f"{', '.join(entry.options.model_fields)}")) from None


def options_of(config: Any, name: str) -> BaseModel | None:
    """The options model of effect `name` in `config` (its defaults when the config names none)."""
    entry = DEVICE_EFFECTS.get(name)
    if entry is None or entry.options is None:
        return None
    return entry.options(**config.effects.get(name, {}))
