"""Find the mixture-of-experts blocks of a model.

A block is an MoE block when it owns a set of experts (fused 3-D tensors or a ModuleList) and a router. What those
are called is a family's knowledge: each adapter (`romer.moe.adapter.MoeAdapter`) passes its own names; the
defaults here (`experts`, `gate` or `router`) are what the Hugging Face MoE families share, and what a model of a
type no adapter knows is searched by.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


ROUTER_ATTRS = ("gate", "router")
EXPERTS_ATTR = "experts"


@dataclass(frozen=True)
class MoeBlock:
    name: str
    module: nn.Module
    router: nn.Module
    experts: nn.Module
    num_experts: int


def count_experts(experts: nn.Module) -> int:
    """Experts in a set: a ModuleList's length, its `num_experts`, or the leading size of its fused 3-D tensors."""
    if isinstance(experts, nn.ModuleList):
        return len(experts)
    count = getattr(experts, "num_experts", None)
    if count is None:
        fused = next((p for p in experts.parameters(recurse=False) if p.dim() == 3), None)
        count = fused.shape[0] if fused is not None else 0
    return int(count)


def find_moe_blocks(model: nn.Module, router_attrs: tuple[str, ...] = ROUTER_ATTRS,
                    experts_attr: str = EXPERTS_ATTR) -> list[MoeBlock]:
    """Every MoE block in model order: a module with a set of more than one expert under `experts_attr` and a
    router under the first of `router_attrs` it has."""
    blocks = []
    for name, module in model.named_modules():
        experts = getattr(module, experts_attr, None)
        router = next((getattr(module, attr) for attr in router_attrs
                       if isinstance(getattr(module, attr, None), nn.Module)), None)
        if isinstance(experts, nn.Module) and router is not None and count_experts(experts) > 1:
            blocks.append(MoeBlock(name, module, router, experts, count_experts(experts)))
    return blocks
