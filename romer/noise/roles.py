"""Which weights sit on the chip, by role, found from the model's structure as its family's adapter names it.

Roles: `router`, `experts` (routed), `shared_experts` (linear layers inside an MoE block
other than router and routed experts), `attention` and `dense_mlp` (linear layers of the
decoder outside MoE blocks), `lm_head`. Only matrices (≥ 2-D) are mapped: biases, norms and
embeddings stay in the digital periphery.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from romer.moe.adapter import structure_of


@dataclass(frozen=True)
class ChipTensor:
    name: str
    role: str
    module: nn.Module
    attribute: str

    @property
    def param(self):
        return getattr(self.module, self.attribute)


def _matrices(module: nn.Module, prefix: str):
    for attr, param in module.named_parameters(recurse=False):
        if param.dim() >= 2:
            yield f"{prefix}.{attr}" if prefix else attr, module, attr


def on_chip_tensors(model: nn.Module, roles: tuple[str, ...]) -> list[ChipTensor]:
    """The on-chip matrices of `model` whose role is in `roles`, in model order."""
    structure = structure_of(model)
    role_of: dict[int, str] = {}
    for block in structure.blocks(model):
        for module in block.router.modules():
            role_of[id(module)] = "router"
        for module in block.experts.modules():
            role_of[id(module)] = "experts"
        for module in block.module.modules():
            if isinstance(module, nn.Linear):
                role_of.setdefault(id(module), "shared_experts")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        role_of[id(head)] = "lm_head"
    chosen = []
    for prefix, module in model.named_modules():
        role = role_of.get(id(module))
        if role is None and isinstance(module, nn.Linear):
            role = structure.role_of_linear(prefix)
        if role in roles:
            chosen.extend(ChipTensor(name, role, owner, attr) for name, owner, attr in _matrices(module, prefix))
    return chosen
