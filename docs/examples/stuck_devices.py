"""An example device effect in one file: `stuck-off`, a fraction of devices that programming leaves stuck at zero
conductance (a stuck-at fault, as ReRAM and PCM arrays show), fixed for the life of one programming.

It touches no other file. Import it before building a chip (or name it under the `romer.methods` entry-point group,
which the command line loads before any command runs), then give its options in a noise YAML file:

    preset: pcm-cim
    effects:
      stuck-off: {fraction: 0.002}

`tests/test_noise_effects.py` installs this file and checks the fault rate as a binomial count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from romer.noise import EffectInputs, options_of, register_device_effect

NAME = "stuck-off"


class StuckOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(0.0, ge=0, lt=1, description="share of devices stuck at 0 µS (assumed: give your "
                                                         "array's measured fault rate)")


@dataclass(frozen=True)
class StuckOff:
    fraction: float

    @property
    def active(self) -> bool:
        return self.fraction > 0

    def act(self, g: torch.Tensor, inputs: EffectInputs) -> torch.Tensor:
        draw = torch.rand(g.shape, generator=inputs.stream(NAME), device=g.device, dtype=g.dtype)
        return g.masked_fill(draw < self.fraction, 0.0)

    @classmethod
    def from_config(cls, config) -> "StuckOff":
        return cls(options_of(config, NAME).fraction)


# after programming noise (100), before the moment's effects; a fault is fixed when the chip is programmed
register_device_effect(NAME, StuckOff.from_config, order=150, stage="programming", options=StuckOptions)
