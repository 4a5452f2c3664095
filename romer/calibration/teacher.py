"""The clean twin as a teacher: its next-token distributions (and each decoder layer's output) on the
calibration sequences, computed once per chip and kept on the host in float16 to bound device memory. Full
distributions while they fit MAX_TEACHER_BYTES (romer-tiny: 32,768 tokens × 4,096 × 2 bytes = 256 MiB), else the
TOP_K most likely tokens per position (a 151,936-token vocabulary at 32,768 tokens: 10 GB full, 13 MB top-64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from romer.calibration.tokens import CalibrationTokens


MAX_TEACHER_BYTES = 2 * 2**30  # the full next-token distributions are kept up to this size on the host ...
TOP_K = 64                     # ... beyond it, each token's TOP_K most likely tokens and the rest's total mass


@dataclass
class Targets:
    """The clean twin on one batch: its next-token log-probabilities, in full [B, T, V] or as the TOP_K most likely
    tokens per position (`top_ids`, their `log_probs` [B, T, K]), and, when asked for, each decoder layer's output."""

    log_probs: torch.Tensor
    hidden: tuple[torch.Tensor, ...] = ()
    top_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.log_probs)

    def kl(self, log_q: torch.Tensor) -> torch.Tensor:
        """KL(clean ‖ chip) per position [B, T] from the chip's log-probabilities [B, T, V]. With top-k targets the
        tokens outside the clean top k are one bucket on both sides (mass r = 1 − Σ p_top against 1 − Σ q_top): exact
        when the clean model puts all its mass in its top k, and a lower bound of the full KL otherwise."""
        log_p = self.log_probs.to(log_q.device, torch.float32)
        if self.top_ids is None:
            return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
        log_q_top = log_q.gather(-1, self.top_ids.to(log_q.device))
        top = (log_p.exp() * (log_p - log_q_top)).sum(-1)
        rest_p = (1 - log_p.exp().sum(-1)).clamp(min=0)
        rest_q = (1 - log_q_top.exp().sum(-1)).clamp(min=torch.finfo(torch.float32).tiny)
        return top + torch.xlogy(rest_p, rest_p) - rest_p * rest_q.log()


@dataclass
class Teacher:
    fit: list[Targets]      # one per batch of the fit sequences
    holdout: list[Targets]  # one per batch of the held-out sequences (log-probabilities only)
    top_k: int | None = None  # None: full distributions


@torch.no_grad()
def batch_targets(model: nn.Module, sequences: torch.Tensor, batch_size: int, hidden: bool = False,
                  top_k: int | None = None) -> list[Targets]:
    """The model's targets on `sequences`, one per batch of `batch_size` (full distributions, or the `top_k` most likely
    tokens per position); the caller puts the model in its clean state."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        result = model(input_ids=sequences[start:start + batch_size].to(device), output_hidden_states=hidden)
        layers = tuple(h.to("cpu", torch.float16) for h in result.hidden_states[1:]) if hidden else ()
        log_probs = result.logits.float().log_softmax(-1)
        if top_k is None:
            out.append(Targets(log_probs.to("cpu", torch.float16), layers))
        else:
            values, ids = log_probs.topk(top_k, dim=-1)
            out.append(Targets(values.to("cpu", torch.float16), layers, ids.to("cpu", torch.int32)))
    return out


def teacher_top_k(vocab: int, tokens: int) -> int | None:
    """None (full distributions) while they fit MAX_TEACHER_BYTES in float16, else TOP_K."""
    return None if vocab * tokens * 2 <= MAX_TEACHER_BYTES or vocab <= TOP_K else TOP_K


def clean_teacher(model: nn.Module, tokens: CalibrationTokens, batch_size: int, hidden: bool) -> Teacher:
    vocab = model.get_output_embeddings().weight.shape[0]
    top_k = teacher_top_k(vocab, tokens.fit.numel() + tokens.holdout.numel())
    return Teacher(batch_targets(model, tokens.fit, batch_size, hidden, top_k),
                   batch_targets(model, tokens.holdout, batch_size, top_k=top_k), top_k)
