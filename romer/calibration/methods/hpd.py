"""The ROMER authors' earlier remedy: hybrid projection decomposition (HPD; Feng, Zhou et al., 2025, arXiv 2508.11935,
for state space models on analog CIM). A projection W [out, in] is replaced by its SVD factors: U·Σ [out, r] is
programmed into the arrays (with their own tiles, noise and periphery), Vᵀ [r, in] runs in digital units, r =
min(out, in), so the product is W exactly before noise.

Which projections (`hpd_reading`). The paper's abstract decomposes "the last output projection layer". In a decoder
LLM that reads two ways, both here:
- `last` (the default, the words as written: one layer, the last): the last decoder layer's attention output
  projection;
- `every`: each decoder layer's attention output projection, from the last layer back, while their Vᵀ fit
  `digital_budget` × the chip's weights;
- `ranked` (ours, not the paper's): any matrix of its own but a router, ranked by the held-out perplexity it gives
  back when it alone runs digitally on this chip, per digital weight, within `digital_budget`;
- `last-down`: in an MoE model the block's last write to the residual stream is its experts' down projection (as
  a Mamba block's is its `out_proj`): the last MoE layer's fused down projection, every expert slot decomposed on
  its own (U·Σ [hidden, r] in the slot's arrays, Vᵀ [r, r] digital, r its intermediate width).
Routers are never decomposed. `hpd_whole` is the control: the same matrices moved whole to digital units, at the
same share when they are square or wide (Vᵀ is then as large as W).

Digital cost: the Vᵀ factors (`Calibration.digital_share`).
"""

from __future__ import annotations

import re

import torch

from romer.errors import RomerError

from romer.calibration.registry import Method, register_method
from romer.calibration.methods.offload import tensor_sensitivity
from romer.calibration.step import Step, register_step

# the attention output projection's name in every supported family (o_proj; out_proj and dense in others)
OUTPUT_PROJECTION = re.compile(r"layers\.(\d+)\..*\.(o_proj|out_proj|dense)\.weight$")
DOWN_PROJECTION = re.compile(r"layers\.(\d+)\..*down_proj$")  # the fused experts' down projection


def output_projections(chip) -> list[str]:
    """The attention output projections on the chip, from the last decoder layer back."""
    found = []
    for name in chip.on_chip_names():
        match = OUTPUT_PROJECTION.search(name)
        if match and chip.role(name) == "attention" and len(chip.shape(name)) == 2:
            found.append((int(match.group(1)), name))
    return [name for _, name in sorted(found, reverse=True)]


def last_down_projection(chip) -> str | None:
    """The last MoE layer's fused expert down projection on the chip, or None."""
    found = [(int(m.group(1)), name) for name in chip.on_chip_names()
             if (m := DOWN_PROJECTION.search(name)) and chip.role(name) == "experts" and len(chip.shape(name)) == 3]
    return max(found)[1] if found else None


class HybridProjectionDecomposition(Step):
    name = "hpd"
    options = ("digital_budget", "hpd_reading", "hpd_whole")

    def enabled(self, config, chip) -> bool:
        return chip is not None and (config.hpd_reading in ("last", "last-down") or config.digital_budget > 0)

    def reads(self, config) -> tuple[str, ...]:
        return ("hpd_reading", "hpd_whole") if config.hpd_reading in ("last", "last-down") else self.options

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip) and config.hpd_reading == "ranked"

    @staticmethod
    def factor_cost(chip, name: str) -> int:
        """Vᵀ's weights for one matrix (one expert slot of a fused tensor)."""
        out_dim, in_dim = chip.shape(name)[-2:]
        return min(out_dim, in_dim) * in_dim

    def candidates(self, context) -> list[str]:
        chip, config = context.chip, context.config
        if config.hpd_reading in ("last", "every"):
            return output_projections(chip)[:1] if config.hpd_reading == "last" else output_projections(chip)
        matrices = [n for n in chip.on_chip_names() if len(chip.shape(n)) == 2 and chip.role(n) != "router"]
        measured = tensor_sensitivity(context.model, chip, context.tokens.require_holdout("hpd's ranking"),
                                      context.batch_size, max_size=float("inf"), names=matrices)
        context.calibration.report["hpd_sensitivity"] = measured[:20]
        return [record["tensor"] for record in measured if record["ppl_gain"] > 0]

    @torch.no_grad()
    def run(self, context) -> None:
        if context.config.hpd_reading == "last-down":
            self.run_last_down(context)
            return
        chip, calibration, config = context.chip, context.calibration, context.config
        allowance = int(config.digital_budget * chip.total_parameters)
        chosen, used = [], 0
        for name in self.candidates(context):
            cost = self.factor_cost(chip, name)
            if config.hpd_reading != "last" and used + cost > allowance:
                continue
            (calibration.make_digital if config.hpd_whole else calibration.decompose)(name)
            chosen.append(name)
            used += cost
        calibration.report["hpd"] = {"reading": config.hpd_reading, "whole": config.hpd_whole,
                                     "budget": config.digital_budget, "decomposed": calibration.decomposed_names(),
                                     "matrices": chosen, "digital_weights": used}

    @torch.no_grad()
    def run_last_down(self, context) -> None:
        chip, calibration, config = context.chip, context.calibration, context.config
        name = last_down_projection(chip)
        if name is None:
            raise RomerError("hpd_reading=last-down needs fused expert down projections on the chip (roles include "
                             "experts); this chip holds none")
        experts, out_dim, in_dim = chip.shape(name)
        for slot in range(experts):
            (calibration.make_digital if config.hpd_whole else calibration.decompose)(name, slot=slot)
        calibration.report["hpd"] = {"reading": "last-down", "whole": config.hpd_whole, "matrices": [name],
                                     "slots": experts, "decomposed": calibration.decomposed_names(),
                                     "digital_weights": experts * (out_dim * in_dim if config.hpd_whole
                                                                   else self.factor_cost(chip, name))}


register_step(HybridProjectionDecomposition())
register_method(Method("hpd", "the ROMER authors' earlier HPD (Feng, Zhou et al. 2025): the last decoder layer's "
                              "attention output projection held as SVD factors, U·Σ on the chip and Vᵀ in digital "
                              "units (hpd_reading: every, ranked, last-down; hpd_whole: the control)",
                       steps=("hpd",), defaults={"digital_budget": 0.01}))
