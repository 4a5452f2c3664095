"""`key=value` on the command line, read one way everywhere (`--set`, `--noise NAME:...`, `--vary`).
Values are YAML scalars (`0.5`, `true`, `renorm`); a malformed item is a one-line error that shows the form."""

from __future__ import annotations

from typing import Callable

import yaml

from romer.errors import RomerError


def scalar(key: str, raw: str):
    return yaml.safe_load(raw)


def split_assignment(item: str, error: str) -> tuple[str, str]:
    """(key, raw value) of `key=value`; `error` is the message for a malformed item, with `{item}` in it."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise RomerError(error.format(item=item))
    return key.strip(), raw


def parse_assignments(text: str, error: str, value: Callable[[str, str], object] = scalar) -> dict:
    """`key=value,key=value` as a dict; `value(key, raw)` reads each value (default: a YAML scalar)."""
    pairs = (split_assignment(item, error) for item in filter(None, (text or "").split(",")))
    return {key: value(key, raw) for key, raw in pairs}
