"""Calibration tokens: the start of an unlabeled calibration stream, cut into whole sequences,
with a held-out share for scoring choices. Never the evaluation split: the caller passes the
calibration split, and `calibrate_` sees nothing else."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from romer.errors import RomerError


@dataclass(frozen=True)
class CalibrationTokens:
    fit: torch.Tensor      # [sequences, window]
    holdout: torch.Tensor  # [sequences, window], may be empty

    @classmethod
    def split(cls, ids: torch.Tensor, window: int, max_tokens: int, holdout: float) -> "CalibrationTokens":
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1:
            raise RomerError("calibration data must be a 1-D tensor of token ids (romer.tokenize_stream)")
        usable = min(ids.numel(), max_tokens) // window
        if usable < 1:
            raise RomerError(f"the calibration data has {ids.numel()} tokens, fewer than one sequence of {window}; "
                             "give more calibration text or a smaller window")
        chunks = ids[: usable * window].view(usable, window)
        held = int(round(usable * holdout))
        if holdout > 0 and usable >= 2:
            held = min(max(held, 1), usable - 1)
        else:
            held = 0
        return cls(chunks[: usable - held], chunks[usable - held:])

    @property
    def tokens(self) -> int:
        return self.fit.numel() + self.holdout.numel()

    def require_holdout(self, purpose: str) -> torch.Tensor:
        if self.holdout.numel() == 0:
            raise RomerError(f"{purpose} needs held-out calibration tokens; set holdout > 0 and give at least two "
                             "calibration sequences")
        return self.holdout
