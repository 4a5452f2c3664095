"""How a chip computes fused experts: the model's own grouped kernel (no expert needs the chip per forward), the
grouped kernel with each expert's column offsets added after it (`romer_chip`, fused_experts.py), or transformers'
eager loop, one `F.linear` per expert, which carries every per-forward effect, digital correction and digital factor."""

from __future__ import annotations

from torch import nn

from romer.noise.chip.holdings import ChipHoldings
from romer.noise.config import NoiseConfig
from romer.noise.fused_experts import NAME as FUSED_ON_CHIP, fused_path_possible


class ExpertsPath:
    """The model's experts implementation while it sits on the chip; `reset` gives the model its own back."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.original: str | None = None  # the model's own implementation, once the chip changed it

    def choose(self, holdings: ChipHoldings, config: NoiseConfig, per_forward: bool) -> None:
        """Fused experts where the only per-forward effect is the column offsets (romer_chip), eager where a forward
        needs more of the chip; a chip with no expert on it keeps the model's own kernels."""
        fused_corrected = [n for n in holdings.corrections if holdings.originals.get(n) is not None
                           and holdings.is_fused(n)]
        factored = {n for n, _ in holdings.slot_factors}  # a slot held as HPD's factors needs its Vᵀ per expert
        if not (per_forward or fused_corrected or factored) or not any(t.param.dim() == 3 for t in holdings.tensors):
            return
        offsets_only = config.mode == "weights" and config.read_sigma * config.strength == 0 and config.ir_drop == 0
        # per-column gains and offsets after the ADCs stay per expert and column, as the offsets do; an adapter does not
        columns_only = all(holdings.corrections[n].down is None for n in fused_corrected)
        if offsets_only and columns_only and not factored and fused_path_possible(self.model):
            self.use_fused_on_chip()
        else:
            self.use_eager()

    def use_eager(self) -> None:
        self._set("eager")

    def use_fused_on_chip(self) -> None:
        self._set(FUSED_ON_CHIP)

    def _set(self, implementation: str) -> None:
        if not hasattr(self.model, "set_experts_implementation"):
            return
        if self.original is None:
            self.original = getattr(self.model.config, "_experts_implementation", None) or "eager"
        self.model.set_experts_implementation(implementation)

    def describe(self) -> str:
        now = getattr(self.model.config, "_experts_implementation", None)
        if self.original is None or now == self.original:
            return "fused"
        return "fused, offsets per expert" if now == FUSED_ON_CHIP else "eager"

    def reset(self) -> None:
        if self.original is not None:
            self.model.set_experts_implementation(self.original)
