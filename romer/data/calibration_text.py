"""Where a run's calibration tokens come from: the user's text, text the clean model writes, or both in turn.

    --calib-data (none)                   the calibration split of --data
    --calib-data notes.txt                a file or a registered corpus
    --calib-data generated:118089         the clean model writes it (romer/data/generated.py)
    --calib-data calib+generated:65536    the calibration split of --data first, then the model's text

Parts are joined in the order given; `calib` names the calibration split of --data. The fit takes the start of the
stream and holds out its end for choices, so a mix's held-out share is the model's text, never the evaluation text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from romer.data.corpus import Corpus
from romer.data.generated import GenerationRecipe, generate_ids, is_generated, parse_recipe
from romer.data.registry import load_corpus
from romer.errors import RomerError

DEFAULT_PART = "calib"


@dataclass(frozen=True)
class CalibrationSource:
    """The parsed `--calib-data`: corpora read at once (they are checked before a model loads), recipes written
    once the clean model is at hand."""

    spec: str
    parts: tuple[Corpus | GenerationRecipe, ...]

    @classmethod
    def parse(cls, calib_data: str | None, data: str) -> "CalibrationSource":
        spec = calib_data or DEFAULT_PART
        pieces = [spec] if Path(spec).expanduser().exists() else [p.strip() for p in spec.split("+")]
        if any(not piece for piece in pieces):
            raise RomerError(f"--calib-data '{spec}' has an empty part; join parts with '+', e.g. "
                             "calib+generated:65536")
        parts = tuple(parse_recipe(piece) if is_generated(piece)
                      else load_corpus(data, "calib") if piece == DEFAULT_PART else load_corpus(piece)
                      for piece in pieces)
        return cls(spec, parts)

    def refuse_overlap(self, evaluation: Corpus) -> None:
        if any(isinstance(part, Corpus) and part.sha256 == evaluation.sha256 for part in self.parts):
            raise RomerError("the calibration text is the evaluation text; pass a different --calib-data")

    @property
    def generates(self) -> bool:
        return any(isinstance(part, GenerationRecipe) for part in self.parts)

    def token_ids(self, model, tokenizer, window: int, tokenize) -> torch.Tensor:
        """The whole stream; `tokenize(tokenizer, text)` turns a corpus into ids. Call while the model is clean."""
        streams = [tokenize(tokenizer, part.text) if isinstance(part, Corpus)
                   else generate_ids(model, tokenizer, part, window) for part in self.parts]
        return torch.cat(streams) if streams else torch.empty(0, dtype=torch.long)

    def describe(self, ids: torch.Tensor) -> dict:
        """What the report says: one corpus as before; a stream with generated text by its parts and token digest."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Corpus):
            return self.parts[0].describe()
        return {"name": "+".join(part.name if isinstance(part, Corpus) else part.describe() for part in self.parts),
                "split": "+".join(part.split if isinstance(part, Corpus) else "written by the clean model"
                                  for part in self.parts),
                "documents": len(self.parts), "tokens": int(ids.numel()),
                "sha256": hashlib.sha256(ids.numpy().astype("int64").tobytes()).hexdigest()}
