"""The clean twin as a teacher: its next-token distributions (and each decoder layer's output) on the
calibration sequences, computed once per chip and kept on the host in float16 to bound device memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from romer.calibration.tokens import CalibrationTokens


@dataclass
class Targets:
    """The clean twin on one batch: next-token log-probabilities and, when asked for, each decoder layer's output."""

    log_probs: torch.Tensor
    hidden: tuple[torch.Tensor, ...] = ()

    def __len__(self) -> int:
        return len(self.log_probs)


@dataclass
class Teacher:
    fit: list[Targets]      # one per batch of the fit sequences
    holdout: list[Targets]  # one per batch of the held-out sequences (log-probabilities only)


@torch.no_grad()
def batch_targets(model: nn.Module, sequences: torch.Tensor, batch_size: int, hidden: bool = False) -> list[Targets]:
    """The model's targets on `sequences`, one per batch of `batch_size`; the caller puts the model in its clean state."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        result = model(input_ids=sequences[start:start + batch_size].to(device), output_hidden_states=hidden)
        layers = tuple(h.to("cpu", torch.float16) for h in result.hidden_states[1:]) if hidden else ()
        out.append(Targets(result.logits.float().log_softmax(-1).to("cpu", torch.float16), layers))
    return out


def clean_teacher(model: nn.Module, tokens: CalibrationTokens, batch_size: int, hidden: bool) -> Teacher:
    return Teacher(batch_targets(model, tokens.fit, batch_size, hidden), batch_targets(model, tokens.holdout, batch_size))
