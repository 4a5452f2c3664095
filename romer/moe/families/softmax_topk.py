"""OLMoE, Qwen2-MoE (Qwen1.5-MoE), Qwen3-MoE and Mixtral: softmax over experts, top-k, optional
re-normalisation of the chosen weights. Qwen2-MoE adds a shared expert with a sigmoid gate."""

from __future__ import annotations

import torch

from romer.moe.adapter import MoeAdapter, MoeLayer, register_adapter


class SoftmaxTopK(MoeAdapter):
    always_normalize = False  # Mixtral re-normalises unconditionally
    keep_logit_dtype = True   # OLMoE / Qwen cast the weights back to the logits' dtype

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
        weights, indices = torch.topk(probs, layer.top_k, dim=-1)
        if self.always_normalize or layer.router.norm_topk_prob:
            weights /= weights.sum(dim=-1, keepdim=True)
        if self.keep_logit_dtype:
            weights = weights.to(logits.dtype)
        return weights, indices


@register_adapter
class Olmoe(SoftmaxTopK):
    family = "OLMoE"
    model_types = ("olmoe",)


@register_adapter
class Qwen2Moe(SoftmaxTopK):
    family = "Qwen2-MoE (Qwen1.5-MoE)"
    model_types = ("qwen2_moe",)
    shared_attrs = ("shared_expert", "shared_expert_gate")


@register_adapter
class Qwen3Moe(SoftmaxTopK):
    family = "Qwen3-MoE"
    model_types = ("qwen3_moe",)


@register_adapter
class Mixtral(SoftmaxTopK):
    family = "Mixtral"
    model_types = ("mixtral",)
    always_normalize = True
    keep_logit_dtype = False
