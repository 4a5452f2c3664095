"""DeepSeek-V3: sigmoid scores, a per-expert correction bias for the choice only, group-limited
top-k over the sum of each group's best two, optional re-normalisation, routed scaling.
Logits are computed as in DeepSeek-V2 (float32)."""

from __future__ import annotations

import torch

from romer.moe.adapter import MoeLayer, register_adapter
from romer.moe.families.deepseek_v2 import DeepseekV2, allowed_experts


@register_adapter
class DeepseekV3(DeepseekV2):
    family = "DeepSeek-V3"
    model_types = ("deepseek_v3",)

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        router = layer.router
        scores = logits.sigmoid()
        choice = scores + router.e_score_correction_bias
        group_scores = choice.view(-1, router.num_group, router.num_experts // router.num_group).topk(2, dim=-1)[0].sum(dim=-1)
        choice = choice.masked_fill(~allowed_experts(group_scores, router), float("-inf"))
        indices = torch.topk(choice, k=router.top_k, dim=-1, sorted=False)[1]
        weights = scores.gather(1, indices)
        if router.norm_topk_prob:
            weights /= weights.sum(dim=-1, keepdim=True) + 1e-20
        return weights * router.routed_scaling_factor, indices
