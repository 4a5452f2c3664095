"""Expert load of a model on a token stream: each token routed once, in non-overlapping chunks."""

from __future__ import annotations

import torch
from torch import nn

from romer.moe.metrics import LoadMetrics
from romer.moe.telemetry import RoutingRecorder
from romer.progress import progress_bar


@torch.no_grad()
def expert_load(model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8,
                progress: bool = False) -> list[LoadMetrics]:
    """Per-layer load metrics over all complete `window`-token chunks of `ids` (the tail is dropped)."""
    chunks = ids[: ids.numel() // window * window].view(-1, window)
    device = next(model.parameters()).device
    with RoutingRecorder(model) as recorder, progress_bar("routing", total=len(chunks), enabled=progress) as advance:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start:start + batch_size]
            model(input_ids=batch.to(device))
            advance(len(batch))
    return recorder.metrics()
