"""Find the mixture-of-experts blocks of a model.

A block is an MoE block when it owns a set of experts (`experts`: fused 3-D tensors or a
ModuleList) and a router (`gate` or `router`). This is the structural test that every
supported family passes; the per-family adapters build on the blocks found here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from romer.errors import RomerError

_ROUTER_NAMES = ("gate", "router")


@dataclass(frozen=True)
class MoeBlock:
    name: str
    module: nn.Module
    router: nn.Module
    experts: nn.Module
    num_experts: int


def _num_experts(experts: nn.Module) -> int:
    if isinstance(experts, nn.ModuleList):
        return len(experts)
    count = getattr(experts, "num_experts", None)
    if count is None and hasattr(experts, "gate_up_proj"):
        count = experts.gate_up_proj.shape[0]
    return int(count or 0)


def find_moe_blocks(model: nn.Module) -> list[MoeBlock]:
    """Every MoE block in model order."""
    blocks = []
    for name, module in model.named_modules():
        experts = getattr(module, "experts", None)
        router = next((getattr(module, attr) for attr in _ROUTER_NAMES
                       if isinstance(getattr(module, attr, None), nn.Module)), None)
        if isinstance(experts, nn.Module) and router is not None and _num_experts(experts) > 1:
            blocks.append(MoeBlock(name, module, router, experts, _num_experts(experts)))
    return blocks


def require_moe(model: nn.Module, name: str) -> list[MoeBlock]:
    blocks = find_moe_blocks(model)
    if not blocks:
        raise RomerError(f"romer needs a mixture-of-experts model; {name} has no MoE layers")
    return blocks
