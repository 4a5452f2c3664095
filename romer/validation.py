"""Build a pydantic model from user fields, or fail with one line naming the first bad field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from romer.errors import RomerError

Model = TypeVar("Model", bound=BaseModel)


def build(model: type[Model], fields: dict, noun: str, where_listed: str) -> Model:
    """`model(**fields)`; a validation error becomes "<noun> 'field': message (got …)", and an unknown
    field "unknown <noun> 'field'; <where_listed>"."""
    try:
        return model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or noun
        if first["type"] == "extra_forbidden":
            raise RomerError(f"unknown {noun} '{field}'; {where_listed}") from None
        message = first["msg"].removeprefix("Value error, ")
        raise RomerError(f"{noun} '{field}': {message} (got {first.get('input')!r})") from None
