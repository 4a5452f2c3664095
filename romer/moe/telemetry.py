"""Count which experts the routers pick while a model runs.

    with RoutingRecorder(model) as recorder:
        model(input_ids)
    recorder.metrics()   # one LoadMetrics per MoE layer, in model order

Hooks observe the router's output and never change it, so a forward with the recorder
attached computes exactly what it computes without. Routers follow the transformers 5
convention, returning `(logits, scores, indices)`.
"""

from __future__ import annotations

import torch
from torch import nn

from romer.moe.detect import MoeBlock, require_moe
from romer.moe.metrics import LoadMetrics, load_metrics


class RoutingRecorder:
    def __init__(self, model: nn.Module, blocks: list[MoeBlock] | None = None):
        self.blocks = blocks or require_moe(model, type(model).__name__)
        self.counts = [torch.zeros(block.num_experts, dtype=torch.long) for block in self.blocks]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "RoutingRecorder":
        for layer, block in enumerate(self.blocks):
            self._handles.append(block.router.register_forward_hook(self._counter(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _counter(self, layer: int):
        def hook(module: nn.Module, args, output) -> None:
            indices = output[-1]
            self.counts[layer] += torch.bincount(indices.flatten().cpu(), minlength=self.blocks[layer].num_experts)
        return hook

    def metrics(self) -> list[LoadMetrics]:
        return [load_metrics(counts) for counts in self.counts]
