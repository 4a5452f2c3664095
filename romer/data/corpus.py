"""A corpus split as one text stream, with the fingerprint that makes a result traceable."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Corpus:
    """One split of one dataset, already joined into the single stream that is tokenized.

    `sha256` is of the UTF-8 text, so two results computed on the same bytes can be matched
    even when the interpreter (and so the `stdlib` corpus) differs between machines.
    """

    name: str
    split: str
    text: str
    documents: int = 1
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", hashlib.sha256(self.text.encode("utf-8")).hexdigest())

    def describe(self) -> dict:
        return {"name": self.name, "split": self.split, "documents": self.documents,
                "chars": len(self.text), "sha256": self.sha256}
