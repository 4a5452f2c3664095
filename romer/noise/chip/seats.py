"""Which chip each model sits on now: one handle per model, held weakly by the model so a restored model is freed."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from torch import nn

_SEATS: WeakKeyDictionary = WeakKeyDictionary()  # model → its ChipHandle (not imported here: the handle imports us)


def seat(model: nn.Module, handle) -> None:
    _SEATS[model] = handle


def unseat(model: nn.Module, handle) -> None:
    """Free the model's seat if `handle` holds it: the key is weak but the handle, its value, holds the model; left in
    place, a model once put on a chip would never be freed (at 16 OLMoE layers a second model then no longer fits)."""
    if _SEATS.get(model) is handle:
        del _SEATS[model]


def chip_of(model: nn.Module):
    """The chip `model` sits on now, or None."""
    handle = _SEATS.get(model)
    return handle if handle is not None and not handle.restored else None
