"""The ROMER authors' earlier remedy: hybrid projection decomposition (HPD; Feng, Zhou et al., 2025, for state space
models on analog CIM). The most noise-sensitive projection W [out, in] is replaced by its SVD factors: U·Σ [out, r]
is programmed into the arrays (with their own tiles, noise and periphery), Vᵀ [r, in] runs in digital units, r =
min(out, in), so the product is W exactly before noise. Programming noise and ADC errors then act on U·Σ, whose
columns carry the singular values, behind a digital rotation of the inputs.

Which projections: HPD names the most sensitive one; we rank the chip's matrices (fused expert tensors excluded:
HPD decomposes matrices of their own) by the held-out perplexity each gives back when it alone runs digitally, on
this chip, per digital weight, and decompose them in that order while their digital factors fit `digital_budget` ×
the chip's weights. Digital cost: the Vᵀ factors (`Calibration.digital_share`).
"""

from __future__ import annotations

import torch

from romer.calibration.registry import Method, register_method
from romer.calibration.methods.offload import tensor_sensitivity
from romer.calibration.step import Step, register_step


class HybridProjectionDecomposition(Step):
    name = "hpd"
    options = ("digital_budget",)

    def enabled(self, config, chip) -> bool:
        return chip is not None and config.digital_budget > 0

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip)

    @torch.no_grad()
    def run(self, context) -> None:
        chip, calibration = context.chip, context.calibration
        allowance = int(context.config.digital_budget * chip.total_parameters)
        matrices = [n for n in chip.on_chip_names() if len(chip.shape(n)) == 2]
        measured = tensor_sensitivity(context.model, chip, context.tokens.require_holdout("hpd's ranking"),
                                      context.batch_size, max_size=float("inf"), names=matrices)
        used = 0
        for record in measured:
            out_dim, in_dim = chip.shape(record["tensor"])
            cost = min(out_dim, in_dim) * in_dim
            if record["ppl_gain"] > 0 and used + cost <= allowance:
                calibration.decompose(record["tensor"])
                used += cost
        calibration.report["hpd"] = {"budget": context.config.digital_budget, "decomposed": calibration.decomposed_names(),
                                     "digital_weights": used, "sensitivity": measured[:20]}


register_step(HybridProjectionDecomposition())
register_method(Method("hpd", "the ROMER authors' earlier HPD (Feng, Zhou et al. 2025): the most noise-sensitive "
                              "projections as SVD factors, U·Σ on the chip and Vᵀ in digital units, within "
                              "digital_budget", steps=("hpd",), defaults={"digital_budget": 0.01}))
