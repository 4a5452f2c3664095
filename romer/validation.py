"""Build a pydantic model from user fields, or fail with one line naming the first bad field."""

from __future__ import annotations

from typing import ClassVar, TypeVar

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
        raise RomerError(one_line(error, noun, where_listed, flags)) from None


def one_line(error: ValidationError, noun: str, where_listed: str, flags: bool = False) -> str:
    """The first problem of a pydantic error as one line naming the field, the value and what is allowed."""
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or noun
    if first["type"] == "extra_forbidden":
        return f"unknown {noun} '{field}'; {where_listed}"
    if flags and first["type"] in BOUNDS and len(first["loc"]) == 1:
        key, words = BOUNDS[first["type"]]
        return f"--{field.replace('_', '-')} must be {words} {first['ctx'][key]}, got {shown(first.get('input'))}"
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across fields: its own sentence names them; the whole input would be noise
        return message
    return f"{noun} '{field}': {message} (got {shown(first.get('input'))})"


class OneLineErrors(BaseModel):
    """A library value object that refuses a bad value in one line (a RomerError), not pydantic's multi-line dump.
    Subclasses name their fields' noun and where the fields are listed."""

    _noun: ClassVar[str] = "field"
    _where_listed: ClassVar[str] = "see the documentation for the fields"

    def __init__(self, **data) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise RomerError(one_line(error, self._noun, self._where_listed)) from None


def shown(value, limit: int = 60) -> str:
    """The repr of a bad value, cut short: an error line stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
