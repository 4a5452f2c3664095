"""Routing on a token stream: each token routed once, in non-overlapping chunks."""

from __future__ import annotations

import torch
from torch import nn

from romer.evaluation.perplexity import require_one_window
from romer.moe.metrics import LoadMetrics
from romer.moe.telemetry import RoutingRecorder, routing_fidelity
from romer.progress import progress_bar


@torch.no_grad()
def capture_routing(model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8, progress: bool = False,
                    keep_choices: bool = False, logit_every: int = 0, label: str = "routing") -> RoutingRecorder:
    """Run every complete `window`-token chunk of `ids` (the tail is dropped) under a RoutingRecorder."""
    require_one_window(ids.numel(), window)
    chunks = ids[: ids.numel() // window * window].view(-1, window)
    device = next(model.parameters()).device
    with RoutingRecorder(model, keep_choices=keep_choices, logit_every=logit_every) as recorder, \
            progress_bar(label, total=len(chunks), enabled=progress) as advance:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start:start + batch_size]
            model(input_ids=batch.to(device))
            advance(len(batch))
    return recorder


def expert_load(model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8,
                progress: bool = False) -> list[LoadMetrics]:
    """Per-layer load metrics over all complete `window`-token chunks of `ids`."""
    return capture_routing(model, ids, window, batch_size, progress).metrics()


def profile_routing(model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8, chip=None,
                    logit_every: int = 8, progress: bool = False) -> dict:
    """Load metrics clean and, with `chip` (a function that puts the model on a chip and returns the
    handle), noisy on the same tokens, with routing fidelity per layer."""
    clean = capture_routing(model, ids, window, batch_size, progress, keep_choices=chip is not None,
                            logit_every=logit_every if chip is not None else 0, label="routing (clean)")
    result = {"layers": [m.as_dict() for m in clean.metrics()]}
    if chip is not None:
        with chip():
            noisy = capture_routing(model, ids, window, batch_size, progress, keep_choices=True,
                                    logit_every=logit_every, label="routing (noisy)")
        fidelity = routing_fidelity(clean, noisy)
        result |= {"noisy_layers": [m.as_dict() for m in noisy.metrics()],
                   "topk_agreement": [f["topk_agreement"] for f in fidelity],
                   "jaccard": [f["jaccard"] for f in fidelity],
                   "kl": [f.get("kl") for f in fidelity]}
    return result
