"""The clean twin as a teacher: its next-token distributions (and each decoder layer's output) on the
calibration sequences, computed once per chip and kept on the host in float16 to bound device memory. Full
distributions while they fit MAX_TEACHER_BYTES (romer-tiny: 32,768 tokens × 4,096 × 2 bytes = 256 MiB), else the
TOP_K most likely tokens per position (a 151,936-token vocabulary at 32,768 tokens: 10 GB full, 13 MB top-64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from romer.calibration.blocks import record_layer_outputs
from romer.calibration.tokens import CalibrationTokens


MAX_TEACHER_BYTES = 2 * 2**30  # the full next-token distributions are kept up to this size on the host ...
TOP_K = 64                     # ... beyond it, each token's TOP_K most likely tokens and the rest's total mass


@dataclass
class Targets:
    """The clean twin on one batch: its next-token distribution, in full or as the TOP_K most likely tokens per
    position, and, when asked for, each decoder layer's output. Build with `Targets.full` or `Targets.top`.

    In full, the probabilities p are kept (float16 on the host) with Σ p log p per position computed once from those
    same stored values, so each fit step's KL is Σ p log p − Σ p log q: one product with the chip's log-probabilities
    instead of an exp and a difference over the whole vocabulary at every step."""

    probs: torch.Tensor | None = None        # full: [B, T, V]
    neg_entropy: torch.Tensor | None = None  # full: Σ p log p per position [B, T], float32
    top_log_probs: torch.Tensor | None = None  # top-k: [B, T, K]
    top_ids: torch.Tensor | None = None        # top-k: [B, T, K]
    hidden: tuple[torch.Tensor, ...] = ()

    @classmethod
    def full(cls, log_probs: torch.Tensor, hidden: tuple[torch.Tensor, ...] = (), dtype=torch.float16) -> "Targets":
        probs = log_probs.float().exp().to("cpu", dtype)
        stored = probs.float()
        return cls(probs=probs, neg_entropy=torch.xlogy(stored, stored).sum(-1), hidden=hidden)

    @classmethod
    def top(cls, log_probs: torch.Tensor, k: int, hidden: tuple[torch.Tensor, ...] = (),
            dtype=torch.float16) -> "Targets":
        values, ids = log_probs.topk(k, dim=-1)
        return cls(top_log_probs=values.to("cpu", dtype), top_ids=ids.to("cpu", torch.int32), hidden=hidden)

    def __len__(self) -> int:
        return len(self.probs if self.probs is not None else self.top_log_probs)

    def rows(self, rows: slice) -> "Targets":
        """The targets of some of the batch's sequences (the next-token distributions only)."""
        if self.probs is not None:
            return Targets(probs=self.probs[rows], neg_entropy=self.neg_entropy[rows])
        return Targets(top_log_probs=self.top_log_probs[rows], top_ids=self.top_ids[rows])

    def kl(self, log_q: torch.Tensor) -> torch.Tensor:
        """KL(clean ‖ chip) per position [B, T] from the chip's log-probabilities [B, T, V]. With top-k targets the
        tokens outside the clean top k are one bucket on both sides (mass r = 1 − Σ p_top against 1 − Σ q_top): exact
        when the clean model puts all its mass in its top k, and a lower bound of the full KL otherwise."""
        if self.probs is not None:
            p = self.probs.to(log_q.device, torch.float32)
            return self.neg_entropy.to(log_q.device) - (p * log_q).sum(-1)
        log_p = self.top_log_probs.to(log_q.device, torch.float32)
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
    fit_layers: list[list[torch.Tensor]] | None = None      # block-wise: each decoder layer's output, [layer][batch]
    holdout_layers: list[list[torch.Tensor]] | None = None  # float16 on the host


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
        out.append(Targets.full(log_probs, layers) if top_k is None else Targets.top(log_probs, top_k, layers))
    return out


def teacher_top_k(vocab: int, tokens: int) -> int | None:
    """None (full distributions) while they fit MAX_TEACHER_BYTES in float16, else TOP_K."""
    return None if vocab * tokens * 2 <= MAX_TEACHER_BYTES or vocab <= TOP_K else TOP_K


def clean_teacher(model: nn.Module, tokens: CalibrationTokens, batch_size: int, hidden: bool,
                  layers: bool = False) -> Teacher:
    """The clean twin's targets; with `layers`, also every decoder layer's output (the block-wise fit's targets)."""
    vocab = model.get_output_embeddings().weight.shape[0]
    top_k = teacher_top_k(vocab, tokens.fit.numel() + tokens.holdout.numel())
    if not layers:
        return Teacher(batch_targets(model, tokens.fit, batch_size, hidden, top_k),
                       batch_targets(model, tokens.holdout, batch_size, top_k=top_k), top_k)
    made = {}
    fit_layers = record_layer_outputs(model, lambda: made.update(fit=batch_targets(model, tokens.fit, batch_size,
                                                                                   hidden, top_k)))
    holdout_layers = record_layer_outputs(model, lambda: made.update(holdout=batch_targets(model, tokens.holdout,
                                                                                           batch_size, top_k=top_k)))
    return Teacher(made["fit"], made["holdout"], top_k, fit_layers, holdout_layers)
