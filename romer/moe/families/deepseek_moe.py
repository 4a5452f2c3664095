"""DeepSeek-MoE-16B as published with remote code (`model_type: deepseek`): `MoEGate` with its own
`weight`, softmax scores, top-k (unsorted), optional re-normalisation; experts as a ModuleList of
MLPs; shared experts. The gate returns `(topk_idx, topk_weight, aux_loss)` and no logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from romer.moe.adapter import MoeAdapter, MoeLayer, RouterOutput, register_adapter


@register_adapter
class DeepseekMoe(MoeAdapter):
    family = "DeepSeek-MoE (remote code)"
    model_types = ("deepseek",)
    shared_attrs = ("shared_experts",)

    def router_logits(self, layer: MoeLayer, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden.reshape(-1, hidden.shape[-1]), layer.router.weight, None)

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = layer.router
        scores = logits.softmax(dim=-1)
        weights, indices = torch.topk(scores, k=router.top_k, dim=-1, sorted=False)
        if router.top_k > 1 and router.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights, indices

    def read_router_output(self, layer: MoeLayer, output) -> RouterOutput:
        indices, weights, _aux_loss = output
        return RouterOutput(None, weights, indices)

    def make_router_output(self, layer: MoeLayer, logits, weights, indices):
        return indices, weights, None
