"""Routing statistics on calibration sequences: per-layer selection counts and a bounded sample
of raw router logits (before any calibration transform)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from romer.moe.telemetry import RoutingRecorder

MAX_LOGIT_ROWS = 32768


@dataclass(frozen=True)
class RoutingStats:
    counts: list[torch.Tensor]  # per layer [E], selections
    logits: list[torch.Tensor]  # per layer [n, E] float32; empty when not asked for

    def shares(self, layer: int) -> torch.Tensor:
        counts = self.counts[layer].double()
        return counts / counts.sum()


@torch.no_grad()
def routing_stats(model: nn.Module, sequences: torch.Tensor, batch_size: int, logits: bool = False) -> RoutingStats:
    device = next(model.parameters()).device
    with RoutingRecorder(model, logit_every=1 if logits else 0, max_logit_rows=MAX_LOGIT_ROWS) as recorder:
        for start in range(0, len(sequences), batch_size):
            model(input_ids=sequences[start:start + batch_size].to(device))
    return RoutingStats([c.clone() for c in recorder.counts],
                        [recorder.layer_logits(i) for i in range(len(recorder.layers))])


@torch.no_grad()
def sequence_perplexity(model: nn.Module, sequences: torch.Tensor, batch_size: int) -> float:
    """Perplexity over whole sequences (each scores its tokens after the first): the score that
    calibration choices are made on, always on held-out calibration tokens."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start:start + batch_size].to(device)
        logits = model(input_ids=batch).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                                reduction="sum")
        total += float(nll)
        count += batch[:, 1:].numel()
    return float(torch.tensor(total / count).exp())
