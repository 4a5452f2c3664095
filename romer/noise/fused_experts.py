"""Fused experts that stay fused on a chip whose only per-forward effect is its column offsets (weights mode).

In weights mode an on-chip product is the stored (noisy) weights' product plus each output column's fixed
ADC offset, `x_max · o[column]` (`chip_linear`): an additive term per expert and column. So a fused expert
tensor can keep transformers' grouped kernel: the tokens are sorted by expert, each projection runs as one
grouped product on the stored weights, and the offsets of each row's expert are added after it, scaled by that
row's input scale. The result equals the eager per-expert path to float rounding (tested on every family).
A fused tensor's digital per-column gain and offset after the ADCs (`retune`) are per expert and column too, and are
applied the same way. Effects that need per-call randomness (read noise, analog mode), IR drop, or a low-rank
adapter on a fused tensor still take the eager path (`ChipHandle.experts_path`).

Registered with transformers' experts registry as `romer_chip`; `apply_noise_` selects it.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "romer_chip"


def chip_experts_forward(self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                         top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' experts forward signature: hidden states [tokens, hidden], each token's top-k experts and
    weights; returns the weighted sum of its experts' outputs [tokens, hidden]."""
    num_top_k = top_k_index.shape[-1]
    tokens, hidden = hidden_states.shape
    expert_ids, order = torch.sort(top_k_index.reshape(-1))
    # index_select rather than indexing: the same rows, and its backward (index_add_) is about three times faster on a
    # CPU than the accumulating index_put_ that indexing's backward runs (bench/retune_cost.py)
    rows = hidden_states.index_select(0, order // num_top_k)
    offsets = torch.cumsum(torch.bincount(expert_ids, minlength=self.num_experts), dim=0, dtype=torch.int32)
    projected = _product(self, "gate_up_proj" if self.has_gate else "up_proj", rows, offsets, expert_ids)
    projected = self._apply_gate(projected) if self.has_gate else self.act_fn(projected)
    out = _product(self, "down_proj", projected, offsets, expert_ids)
    if self.has_post_expert_norm:
        out = self.post_expert_norm(out)
    out = out * top_k_weights.reshape(-1)[order].unsqueeze(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return out.index_select(0, inverse).view(tokens, num_top_k, hidden).sum(dim=1).to(hidden_states.dtype)


def _product(experts: nn.Module, name: str, rows: torch.Tensor, offsets: torch.Tensor,
             expert_ids: torch.Tensor) -> torch.Tensor:
    """One grouped projection of the rows (sorted by expert), with its column offsets if the tensor is on the chip."""
    from transformers.integrations.moe import _grouped_linear

    from romer.noise.analog import AnalogWeight, input_scale

    weight = getattr(experts, name)
    bias = getattr(experts, f"{name}_bias")[expert_ids] if experts.has_bias else None
    on_chip = isinstance(weight, AnalogWeight)
    plain = weight.as_subclass(torch.Tensor) if on_chip else weight
    out = _grouped_linear(rows, plain, offsets, bias=None, is_transposed=experts.is_transposed)
    if on_chip and weight.program.errors is not None and weight.program.errors.offset_lsb is not None:
        column_offset = weight.program.column_offset(None)[expert_ids]  # [rows, out]: each row's expert's offsets
        out = torch.addcmul(out, input_scale(rows).to(out.dtype), column_offset.to(out.dtype))
    correction = weight.program.correction if on_chip else None
    if correction is not None:  # the digital gain and offset after each expert's ADCs, as the eager path applies them
        if correction.gain is not None:
            out = out * (1 + correction.gain[expert_ids]).to(out.dtype)
        if correction.offset is not None:
            out = out + (input_scale(rows) * correction.offset[expert_ids]).to(out.dtype)
    return out + bias if bias is not None else out


def fused_path_possible(model: nn.Module) -> bool:
    """Whether the model's fused experts can run through `romer_chip` (transformers' experts registry, [E, out, in]
    weights); otherwise a chip with per-forward effects runs them eager."""
    if not hasattr(model, "set_experts_implementation"):
        return False
    try:
        from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS
    except ImportError:
        return False
    experts = [m for m in model.modules() if hasattr(m, "has_gate") and hasattr(m, "is_transposed")]
    if not experts or any(m.is_transposed for m in experts):
        return False
    if NAME not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(NAME, chip_experts_forward)
    return True
