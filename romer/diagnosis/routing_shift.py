"""How noise moves router logits, on the same calibration sequences clean and on a chip.

Δ = noisy logit − clean logit, per token and expert. Its *systematic* share, Σ_e mean_e(Δ)² /
Σ_e mean_e(Δ²), is the part a per-expert offset explains: what percentile statistics of the logits
can undo. The rest is token-to-token jitter, which they cannot. Router inputs with large outlier
dimensions (trained LLMs have them) turn random router-weight noise into systematic shifts; the
outlier ratio is the largest per-dimension RMS over the median one.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import torch
from torch import nn

from romer.moe.adapter import adapter_for


@contextmanager
def _routing_in_every_layer(model: nn.Module, transform_for) -> Iterator[None]:
    """`transform_for(index)` overrides the routing of MoE layer `index` for the duration of the block."""
    adapter = adapter_for(model)
    with ExitStack() as stack:
        for index, layer in enumerate(adapter.layers(model)):
            stack.enter_context(adapter.override_routing(layer, transform_for(index)))
        yield


@contextmanager
def replaying_routing(model: nn.Module, logits: list[torch.Tensor]) -> Iterator[None]:
    """Every MoE layer routes from the given logits (per layer, every token's row in call order, as a
    `RoutingRecorder` with `logit_every=1` keeps them) instead of its own: the clean twin's routing decisions on a
    chip, the oracle no router calibration can beat."""
    used = [0] * len(logits)

    def replaying(index: int):
        def replay(own: torch.Tensor) -> torch.Tensor:
            rows = own.reshape(-1, own.shape[-1]).shape[0]
            recorded = logits[index][used[index]:used[index] + rows]
            if recorded.shape[0] != rows:
                raise ValueError("replaying_routing needs the tokens of the recording, in the same order, and no more "
                                 "than the recorder kept")
            used[index] += rows
            return recorded.to(own.device, own.dtype).reshape(own.shape)
        return replay

    with _routing_in_every_layer(model, replaying):
        yield


def systematic_share(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """Σ_e mean(Δ_e)² / Σ_e mean(Δ_e²) for logits [tokens, E] of the same tokens."""
    delta = (noisy - clean).double()
    total = (delta ** 2).mean(0).sum()
    return float((delta.mean(0) ** 2).sum() / total) if total > 0 else 0.0


def shift_size(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    """RMS of Δ relative to the clean logits' mean per-expert spread."""
    delta = (noisy - clean).double()
    return float(delta.pow(2).mean().sqrt() / clean.double().std(0).mean())


@contextmanager
def router_input_rms(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """Sums of squares of each MoE layer's router input per dimension, while the block runs."""
    layers = adapter_for(model).layers(model)
    sums: list[torch.Tensor | None] = [None] * len(layers)
    counts = [0] * len(layers)

    def hook(index):
        def record(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[index] = (x ** 2).sum(0).cpu() + (0 if sums[index] is None else sums[index])
            counts[index] += x.shape[0]
        return record

    handles = [layer.router.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    result: list[torch.Tensor | None] = [None] * len(layers)
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
        for i, (s, n) in enumerate(zip(sums, counts)):
            result[i] = None if s is None else (s / max(n, 1)).sqrt()


def outlier_ratio(rms: torch.Tensor) -> float:
    """Largest per-dimension RMS over the median one (≈ 3 for romer-tiny; ≫ 10 where outlier dimensions live)."""
    return float(rms.max() / rms.median().clamp(min=torch.finfo(torch.float64).tiny))
