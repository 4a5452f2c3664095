"""`Calibration`: what `calibrate_` did to one model, how to undo it, and its JSON record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from romer.calibration.config import RomerConfig
from romer.calibration.replacement import Replacement, write_replacement
from romer.calibration.router import LayerTransform
from romer.moe.adapter import MoeAdapter, adapter_for
from romer.noise.chip import ChipHandle


@dataclass
class Calibration:
    model: nn.Module
    config: RomerConfig
    chip: ChipHandle | None
    adapter: MoeAdapter = field(init=False)
    replacements: list[Replacement] = field(default_factory=list)
    transforms: dict[int, LayerTransform] = field(default_factory=dict)
    digital: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # statistics and choices, for the record
    _undo: list[Callable[[], None]] = field(default_factory=list)
    removed: bool = False

    def __post_init__(self) -> None:
        self.adapter = adapter_for(self.model)
        self.layers = self.adapter.layers(self.model)

    # ---- changes, each with its undo -------------------------------------------------------
    def replace(self, replacement: Replacement) -> None:
        self._undo.extend(write_replacement(self.adapter, self.layers[replacement.layer], replacement, self.chip))
        self.replacements.append(replacement)

    def transform(self, layer: int) -> LayerTransform:
        """This layer's routing transform, installed the first time it is asked for; edit it in place."""
        if layer not in self.transforms:
            transform = self.transforms[layer] = LayerTransform()
            self._undo.append(self.adapter.install_routing(self.layers[layer], transform))
        return self.transforms[layer]

    def make_digital(self, name: str) -> None:
        self.chip.make_digital(name)
        self._undo.append(lambda: self.chip.make_digital(name, False))
        self.digital.append(name)

    def remove(self) -> None:
        """Undo everything, last change first: the model is as it was before `calibrate_`."""
        if self.removed:
            return
        with torch.no_grad():
            for undo in reversed(self._undo):
                undo()
        self._undo.clear()
        self.removed = True
        if getattr(self.model, "_romer_calibration", None) is self:
            self.model._romer_calibration = None

    def __enter__(self) -> "Calibration":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ---- record ----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return {
            "method": self.config.method,
            "config": self.config.model_dump(mode="json"),
            "replacements": [r.as_dict() for r in self.replacements],
            "router": {str(layer): t.as_dict() for layer, t in sorted(self.transforms.items()) if t.active},
            "digital": list(self.digital),
            "chip": None if self.chip is None else {"seed": self.chip.seed,
                                                     "noise": self.chip.config.model_dump(mode="json")},
            "report": self.report,
        }
