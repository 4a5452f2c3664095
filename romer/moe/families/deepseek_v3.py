"""DeepSeek-V3: sigmoid scores, a per-expert correction bias for the choice only, group-limited
top-k over the sum of each group's best two, optional re-normalisation, routed scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from romer.moe.adapter import MoeAdapter, MoeLayer, register_adapter


@register_adapter
class DeepseekV3(MoeAdapter):
    family = "DeepSeek-V3"
    model_types = ("deepseek_v3",)
    shared_attrs = ("shared_experts",)

    def router_logits(self, layer: MoeLayer, hidden: torch.Tensor) -> torch.Tensor:
        router = layer.router
        return F.linear(hidden.reshape(-1, router.hidden_dim).type(torch.float32), router.weight.type(torch.float32))

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = layer.router
        scores = logits.sigmoid()
        choice = scores + router.e_score_correction_bias
        per_group = router.num_experts // router.num_group
        group_scores = choice.view(-1, router.num_group, per_group).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(group_scores, k=router.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(-1, router.num_group, per_group).reshape(-1, router.num_experts)
        choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
        indices = torch.topk(choice, k=router.top_k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, indices)
        if router.norm_topk_prob:
            weights /= weights.sum(dim=-1, keepdim=True) + 1e-20
        return weights * router.routed_scaling_factor, indices
