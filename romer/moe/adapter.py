"""One adapter per MoE family: everything that differs between architectures lives there.

An adapter finds the MoE layers of a model and, for one layer, can
- compute the router logits of given hidden states (`router_logits`);
- turn given logits into the routing decision, exactly as the stock router does (`route`),
  so calibrated logits can be substituted (`override_routing`);
- read the router's output in the family's format (`read_router_output`);
- say where expert `slot` keeps its matrices and its router row (`expert_weights`, `router_rows`), which
  calibration's one expert-copy path (`romer.calibration.replacement.write_replacement`) writes through.

Add a family with `@register_adapter` on a subclass that names its `model_types`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from romer.errors import RomerError
from romer.registry import Registry
from romer.moe.detect import EXPERTS_ATTR, ROUTER_ATTRS, MoeBlock, count_experts, find_moe_blocks


@dataclass(frozen=True)
class MoeLayer:
    index: int
    name: str
    block: nn.Module
    router: nn.Module
    experts: nn.Module
    num_experts: int
    top_k: int
    shared: tuple[nn.Module, ...] = field(default=())


@dataclass(frozen=True)
class RouterOutput:
    logits: torch.Tensor | None  # [tokens, experts]; None where the router does not return them
    weights: torch.Tensor        # [tokens, top_k]
    indices: torch.Tensor        # [tokens, top_k]


class MoeAdapter:
    """The base adapter holds what the Hugging Face MoE families share; a family overrides what differs. Its names
    say where a block keeps its router (`router_attrs`, the first one present), its experts (`experts_attr`) and its
    shared experts (`shared_attrs`), and which linear layers outside MoE blocks are attention's
    (`attention_markers`, matched against the module's path)."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    router_attrs: tuple[str, ...] = ROUTER_ATTRS
    experts_attr: str = EXPERTS_ATTR
    shared_attrs: tuple[str, ...] = ()
    attention_markers: tuple[str, ...] = ("attn", "attention")

    # ---- structure -------------------------------------------------------------------------
    def top_k(self, router: nn.Module) -> int:
        return int(router.top_k)

    def count_experts(self, experts: nn.Module) -> int:
        return count_experts(experts)

    def blocks(self, model: nn.Module) -> list[MoeBlock]:
        """Every MoE block of `model`, found by this family's names."""
        return find_moe_blocks(model, self.router_attrs, self.experts_attr)

    def role_of_linear(self, path: str) -> str:
        """The role of a linear layer outside every MoE block, from its module path: `attention` or `dense_mlp`."""
        return "attention" if any(marker in path for marker in self.attention_markers) else "dense_mlp"

    def layers(self, model: nn.Module) -> list[MoeLayer]:
        """The MoE layers in model order (the blocks `blocks` finds, with this family's details)."""
        layers = []
        for index, block in enumerate(self.blocks(model)):
            shared = tuple(getattr(block.module, a) for a in self.shared_attrs
                           if isinstance(getattr(block.module, a, None), nn.Module))
            layers.append(MoeLayer(index, block.name, block.module, block.router, block.experts, block.num_experts,
                                   self.top_k(block.router), shared))
        return layers

    # ---- routing ---------------------------------------------------------------------------
    def router_logits(self, layer: MoeLayer, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden.reshape(-1, hidden.shape[-1]), layer.router.weight)

    def route(self, layer: MoeLayer, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights, indices) from logits, bit for bit as the stock router computes them."""
        raise NotImplementedError

    def read_router_output(self, layer: MoeLayer, output) -> RouterOutput:
        logits, weights, indices = output
        return RouterOutput(logits, weights, indices)

    def make_router_output(self, layer: MoeLayer, logits: torch.Tensor, weights: torch.Tensor,
                           indices: torch.Tensor):
        return logits, weights, indices

    def install_routing(self, layer: MoeLayer, transform: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        """Route from `transform(logits)` instead of the logits, inside the block's own forward, until the
        returned function is called. The router still reports the untransformed logits."""
        router = layer.router

        def forward(hidden_states, *args, **kwargs):
            logits = self.router_logits(layer, hidden_states)
            weights, indices = self.route(layer, transform(logits))
            return self.make_router_output(layer, logits, weights, indices)

        router.forward = forward

        def remove() -> None:
            if router.__dict__.get("forward") is forward:
                del router.forward

        return remove

    @contextmanager
    def override_routing(self, layer: MoeLayer, transform: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """`install_routing` for the duration of a block."""
        remove = self.install_routing(layer, transform)
        try:
            yield
        finally:
            remove()

    # ---- experts ---------------------------------------------------------------------------
    def expert_weights(self, layer: MoeLayer, slot: int) -> list[tuple[nn.Module, str, int | None]]:
        """Where expert `slot` keeps its matrices: (module, attribute, index into a fused tensor or None)."""
        if isinstance(layer.experts, nn.ModuleList):
            return [(module, attr, None) for module in layer.experts[slot].modules()
                    for attr, param in module.named_parameters(recurse=False) if param.dim() == 2]
        return [(layer.experts, attr, slot) for attr, param in layer.experts.named_parameters(recurse=False)
                if param.dim() == 3]

    def router_rows(self, layer: MoeLayer, slot: int) -> dict[str, torch.Tensor]:
        rows = {"weight": layer.router.weight[slot]}
        bias = getattr(layer.router, "e_score_correction_bias", None)
        if bias is not None:
            rows["e_score_correction_bias"] = bias[slot]
        return rows


ADAPTERS: Registry[MoeAdapter] = Registry("an MoE adapter for model type")


def register_adapter(cls: type[MoeAdapter]) -> type[MoeAdapter]:
    """Class decorator: one adapter object serves every model type the class names. A model type that already has
    an adapter is refused in one line naming both origins; `unregister_adapter` first to replace a built-in."""
    adapter = cls()
    origin = f"{cls.__module__}.{cls.__qualname__}"
    for model_type in cls.model_types:
        ADAPTERS.add(model_type, adapter, origin)
    return cls


def unregister_adapter(model_type: str) -> None:
    ADAPTERS.remove(model_type)


def supported_model_types() -> list[str]:
    return sorted(ADAPTERS.names())


_SHARED_STRUCTURE = MoeAdapter()


def structure_of(model: nn.Module) -> MoeAdapter:
    """The adapter that knows `model`'s structure: its family's where one is registered, else the base adapter's
    shared conventions (enough to find blocks and roles; routing needs a family's adapter, `adapter_for`)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return ADAPTERS.get(model_type) or _SHARED_STRUCTURE


def require_moe(model: nn.Module, name: str) -> list[MoeBlock]:
    """`model`'s MoE blocks, found by its family's names; a one-line error when it has none."""
    blocks = structure_of(model).blocks(model)
    if not blocks:
        raise RomerError(f"romer needs a mixture-of-experts model; {name} has no MoE layers")
    return blocks


def adapter_for(model: nn.Module) -> MoeAdapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise RomerError(f"romer has no MoE adapter for model type '{model_type}'; supported: "
                         f"{', '.join(supported_model_types())}. To add one, subclass romer.moe.MoeAdapter "
                         "and decorate it with @register_adapter (see romer/moe/families/)")
    return adapter
