"""Build a pydantic model from user fields, or fail with one line naming the first bad field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from romer.errors import RomerError

Model = TypeVar("Model", bound=BaseModel)


BOUNDS = {"greater_than_equal": ("ge", "at least"), "less_than_equal": ("le", "at most"),
          "greater_than": ("gt", "greater than"), "less_than": ("lt", "less than")}


def build(model: type[Model], fields: dict, noun: str, where_listed: str, flags: bool = False) -> Model:
    """`model(**fields)`; a validation error becomes "<noun> 'field': message (got …)", and an unknown
    field "unknown <noun> 'field'; <where_listed>". With `flags`, a number out of its range reads as the
    command-line option it comes from: "--max-tokens must be at least 2, got 1"."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or noun
        if first["type"] == "extra_forbidden":
            raise RomerError(f"unknown {noun} '{field}'; {where_listed}") from None
        if flags and first["type"] in BOUNDS and len(first["loc"]) == 1:
            key, words = BOUNDS[first["type"]]
            raise RomerError(f"--{field.replace('_', '-')} must be {words} {first['ctx'][key]}, "
                             f"got {shown(first.get('input'))}") from None
        message = first["msg"].removeprefix("Value error, ")
        raise RomerError(f"{noun} '{field}': {message} (got {shown(first.get('input'))})") from None


def shown(value, limit: int = 60) -> str:
    """The repr of a bad value, cut short: an error line stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
