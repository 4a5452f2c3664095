"""`apply_noise_`: program a model onto one simulated chip instance, in place.

    handle = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    ...                      # evaluate the noisy model
    handle.restore()         # the clean weights, bit for bit

    with romer.apply_noise_(model, config, seed=1):
        ...                  # restored on exit

Tensors are programmed one at a time (fused experts one slot at a time) in float32 and
rounded once to the model's dtype, from a random stream keyed by (seed, tensor name, slot):
the same seed gives the same bits, and one tensor's noise never depends on another's.
Where each weight lives (arrays, digital periphery, HPD's factors, digital outliers) is one
value, the chip's `ChipLayout` (`layout.py`); programming a matrix is `programming.py`.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from romer.errors import RomerError
from romer.noise.chip.handle import ChipHandle
from romer.noise.chip.holdings import backup_store
from romer.noise.chip.seats import chip_of
from romer.noise.config import NoiseConfig
from romer.noise.layout import ChipLayout
from romer.noise.roles import on_chip_tensors


def apply_noise_(model: nn.Module, config: NoiseConfig, seed: int,
                 backup: Literal["auto", "memory", "disk"] = "auto", calibration=None,
                 layout: ChipLayout | None = None, at=None) -> ChipHandle:
    """Program `model` onto chip instance `seed` of the chip `config` describes, in place.

    `layout`: where weights live other than the arrays (`ChipLayout`); the parts that name tensors this chip does
    not hold are left out. `at`: the moment the chip is read at (`Condition`), over the configuration's own.
    `calibration`: a calibration loaded with the model (`romer.load_calibration`) whose layout and digital
    corrections this chip takes on; it answers `layout()`, `correction_items()` and `bind_chip(handle)`."""
    if not isinstance(config, NoiseConfig):
        raise RomerError("apply_noise_ needs a NoiseConfig; build one with NoiseConfig.preset(name)")
    if not isinstance(seed, int) or seed < 0:
        raise RomerError(f"the chip seed must be a non-negative integer, got {seed!r}")
    if chip_of(model) is not None:
        raise RomerError("this model already sits on a chip; restore() the previous handle first")
    if at is not None:
        config = at.applied_to(config)
    tensors = on_chip_tensors(model, config.roles)
    return ChipHandle.program(model, config, seed, tensors, backup_store(tensors, backup), layout=layout,
                              calibration=calibration)
