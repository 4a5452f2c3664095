"""Expert replacement: which cold slot takes which hot expert, and writing it.

On a chip, writing an expert into a slot re-programs that slot's arrays: the copy carries the
slot's own fresh programming noise, never the hot expert's noisy bits (`ChipHandle.reprogram_slot`).
Off the chip (the clean-cost check) it is a plain copy. Every write returns its undo.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from romer.moe.adapter import MoeAdapter, MoeLayer
from romer.noise.chip import ChipHandle


@dataclass(frozen=True)
class Replacement:
    layer: int
    cold: int     # the under-activated slot that is overwritten
    hot: int      # the expert copied into it
    pairing: str  # weights, clone or replica
    cold_share: float  # the cold expert's noisy share before, relative to uniform
    hot_share: float

    def as_dict(self) -> dict:
        return asdict(self)


def plan_replacements(layer: int, shares: torch.Tensor, tau: float, max_replaced: float,
                      pairing: str) -> list[Replacement]:
    """Cold: share < tau / E, coldest first, at most floor(max_replaced · E). Each cold slot takes the
    hottest expert not yet copied (a hot expert gets at most one copy, and a cold one is never a source)."""
    experts = shares.numel()
    relative = shares * experts
    budget = int(max_replaced * experts)
    cold = [int(e) for e in torch.argsort(relative) if relative[e] < tau][:budget]
    hot_order = [int(e) for e in torch.argsort(relative, descending=True) if int(e) not in cold]
    return [Replacement(layer, c, h, pairing, float(relative[c]), float(relative[h]))
            for c, h in zip(cold, hot_order)]


def _copy_off_chip(target: torch.Tensor, source: torch.Tensor) -> Callable[[], None]:
    saved = target.detach().clone()
    target.copy_(source)
    return lambda: target.copy_(saved)


@torch.no_grad()
def write_replacement(adapter: MoeAdapter, layer: MoeLayer, replacement: Replacement,
                      chip: ChipHandle | None) -> list[Callable[[], None]]:
    """Put expert `hot` into slot `cold` (and, for `clone`, its router row); returns the undos."""
    undo: list[Callable[[], None]] = []
    cold_weights = adapter.expert_weights(layer, replacement.cold)
    hot_weights = adapter.expert_weights(layer, replacement.hot)
    for (module, attr, slot), (hot_module, hot_attr, hot_slot) in zip(cold_weights, hot_weights):
        name = chip.name_of(module, attr) if chip is not None else None
        if name is not None:
            hot_name = chip.name_of(hot_module, hot_attr)
            chip.reprogram_slot(name, slot, chip.clean_value(hot_name, hot_slot))
            undo.append(lambda name=name, slot=slot: chip.reprogram_slot(name, slot, None))
        else:
            param = getattr(module, attr)
            source = getattr(hot_module, hot_attr)
            undo.append(_copy_off_chip(param if slot is None else param[slot],
                                       source if hot_slot is None else source[hot_slot]))
    if replacement.pairing == "clone":
        undo.extend(_copy_router_row(adapter, layer, replacement, chip))
    return undo


def _copy_router_row(adapter: MoeAdapter, layer: MoeLayer, replacement: Replacement,
                     chip: ChipHandle | None) -> list[Callable[[], None]]:
    undo = []
    name = chip.name_of(layer.router, "weight") if chip is not None else None
    rows = adapter.router_rows(layer, replacement.hot)
    for key, view in adapter.router_rows(layer, replacement.cold).items():
        if key == "weight" and name is not None:
            target = chip.clean_value(name).clone()
            target[replacement.cold] = target[replacement.hot]
            previous = chip.programmed_target(name)
            chip.reprogram_slot(name, None, target)
            undo.append(lambda previous=previous: chip.reprogram_slot(name, None, previous))
        else:
            undo.append(_copy_off_chip(view, rows[key]))
    return undo
