"""Ours: digital offload within a budget. Move the on-chip tensors whose noise costs the most perplexity
per weight into the digital periphery, until `digital_budget` × the chip's weights is used, counting what the
calibration already keeps in digital units (a method's budget includes everything it adds).

Sensitivity is measured on this chip instance, on held-out calibration tokens: the perplexity
gained when one tensor alone runs digitally, divided by its size. Hardware cost: a digital
matrix-vector unit and SRAM for the chosen weights (the count is reported).
"""

from __future__ import annotations

import torch
from torch import nn

from romer.evaluation.perplexity import sequence_perplexity
from romer.calibration.step import Step, register_step
from romer.noise.chip import ChipHandle


def tensor_sensitivity(model: nn.Module, chip: ChipHandle, holdout: torch.Tensor, batch_size: int, max_size: float,
                       names: list[str] | None = None) -> list[dict]:
    """Per on-chip tensor (of `names`, default all) no larger than `max_size` weights: the held-out perplexity
    it alone gives back when it runs digitally, most per weight first."""
    base = sequence_perplexity(model, holdout, batch_size)
    results = []
    for name in chip.on_chip_names():
        size = chip.size(name)
        if size > max_size or (names is not None and name not in names):
            continue
        chip.make_digital(name)
        ppl = sequence_perplexity(model, holdout, batch_size)
        chip.make_digital(name, False)
        results.append({"tensor": name, "weights": size, "ppl_gain": base - ppl, "gain": base - ppl,
                        "gain_per_mweight": (base - ppl) / size * 1e6})
    return sorted(results, key=lambda r: r["gain_per_mweight"], reverse=True)


def choose_digital(model: nn.Module, chip: ChipHandle, holdout: torch.Tensor, batch_size: int,
                   budget: float, spent: int = 0) -> tuple[list[str], list[dict]]:
    """Greedy by gain per weight, positive gains only, within `budget` × the chip's weights less `spent`; returns
    (chosen, all measurements)."""
    allowance = max(int(budget * chip.total_parameters) - spent, 0)
    measured = tensor_sensitivity(model, chip, holdout, batch_size, allowance)
    chosen, used = [], 0
    for record in measured:
        if record["ppl_gain"] > 0 and used + record["weights"] <= allowance:
            chosen.append(record["tensor"])
            used += record["weights"]
    return chosen, measured


class DigitalOffload(Step):
    name = "offload"
    options = ("digital_budget",)

    def enabled(self, config, chip) -> bool:
        return config.digital_budget > 0 and chip is not None

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip)

    def run(self, context) -> None:
        chip, budget = context.chip, context.config.digital_budget
        spent = context.calibration.digital_weights()
        chosen, measured = choose_digital(context.model, chip, context.tokens.require_holdout("digital offload"),
                                          context.batch_size, budget, spent)
        for name in chosen:
            context.calibration.make_digital(name)
        context.calibration.report["digital"] = {
            "budget": budget, "chip_weights": chip.total_parameters, "spent_before": spent,
            "chosen_weights": sum(r["weights"] for r in measured if r["tensor"] in chosen), "sensitivity": measured[:20]}


register_step(DigitalOffload())
