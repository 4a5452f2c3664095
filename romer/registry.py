"""One rule for every registry of romer (noise presets, corpora, MoE families, calibration methods and steps, noise
effects): a name is registered once. A second registration under a taken name is refused in one line that names
both origins, the module that holds the name and the one that asked for it, so a plugin that shadows a built-in, or
two plugins that collide, are told apart at once instead of one silently winning.
"""

from __future__ import annotations

import sys
from typing import Generic, Iterator, TypeVar

from romer.errors import RomerError

Value = TypeVar("Value")


def caller_module(depth: int = 2) -> str:
    """The module of the frame `depth` levels above this call: called inside a register function, with the default,
    the module that called that function (who registers)."""
    frame = sys._getframe(depth)
    return frame.f_globals.get("__name__", "?")


class Registry(Generic[Value]):
    """Names → values, each with the module that registered it."""

    def __init__(self, noun: str) -> None:
        self.noun = noun
        self._values: dict[str, Value] = {}
        self._origins: dict[str, str] = {}

    def add(self, name: str, value: Value, origin: str | None = None) -> Value:
        origin = origin or caller_module()  # add's caller
        if name in self._values:
            raise RomerError(f"{self.noun} '{name}' is already registered by {self._origins[name]}; {origin} "
                             f"registers it again: choose another name (or unregister the first)")
        self._values[name] = value
        self._origins[name] = origin
        return value

    def remove(self, name: str) -> None:
        self._values.pop(name, None)
        self._origins.pop(name, None)

    def get(self, name: str) -> Value | None:
        return self._values.get(name)

    def origin(self, name: str) -> str | None:
        return self._origins.get(name)

    def names(self) -> list[str]:
        return list(self._values)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)
