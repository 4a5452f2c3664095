"""DeepSeek-V2: float32 logits, softmax, greedy or group-limited greedy top-k, routed scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from romer.moe.adapter import MoeAdapter, MoeLayer, register_adapter


def allowed_experts(group_scores: torch.Tensor, router: nn.Module) -> torch.Tensor:
    """Boolean [tokens, experts]: the experts inside each token's `topk_group` best groups."""
    group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    per_group = router.num_experts // router.num_group
    return group_mask.unsqueeze(-1).expand(-1, router.num_group, per_group).reshape(-1, router.num_experts).bool()


@register_adapter
class DeepseekV2(MoeAdapter):
    family = "DeepSeek-V2"
    model_types = ("deepseek_v2",)
    shared_attrs = ("shared_experts",)

    def router_logits(self, layer: MoeLayer, hidden: torch.Tensor) -> torch.Tensor:
        router = layer.router
        return F.linear(hidden.reshape(-1, router.hidden_dim).type(torch.float32), router.weight.type(torch.float32))

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = layer.router
        scores = logits.softmax(dim=-1, dtype=torch.float32)
        if router.topk_method == "group_limited_greedy":
            group_scores = scores.view(-1, router.num_group, router.num_experts // router.num_group).max(dim=-1).values
            scores = scores.masked_fill(~allowed_experts(group_scores, router), 0.0)
        weights, indices = torch.topk(scores, k=router.top_k, dim=-1, sorted=False)
        return weights * router.routed_scaling_factor, indices
