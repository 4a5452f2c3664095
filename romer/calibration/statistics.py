"""Routing statistics on calibration sequences: per-layer selection counts and the raw router logits
(before any calibration transform), bounded by the telemetry's MAX_LOGIT_ROWS per layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from romer.moe.telemetry import RoutingRecorder


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
    with RoutingRecorder(model, logit_every=1 if logits else 0) as recorder:
        for start in range(0, len(sequences), batch_size):
            model(input_ids=sequences[start:start + batch_size].to(device))
    return RoutingStats([c.clone() for c in recorder.counts],
                        [recorder.layer_logits(i) for i in range(len(recorder.layers))])
