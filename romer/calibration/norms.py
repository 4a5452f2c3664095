"""The norm gains of a model: digital parameters every decoder already has, which `retune` may re-set."""

from __future__ import annotations

from torch import nn


def norm_gains(model: nn.Module) -> dict[str, nn.Parameter]:
    """The 1-D gains of every normalisation layer (RMSNorm, LayerNorm, q/k norms), by parameter name."""
    gains = {}
    for prefix, module in model.named_modules():
        weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
        if isinstance(weight, nn.Parameter) and weight.dim() == 1 and "norm" in type(module).__name__.lower():
            gains[f"{prefix}.weight" if prefix else "weight"] = weight
    return gains
