"""Digital offload within a budget: move the on-chip tensors whose noise costs the most perplexity
per weight into the digital periphery, until `budget` × the on-chip weights is used.

Sensitivity is measured on this chip instance, on held-out calibration tokens: the perplexity
gained when one tensor alone runs digitally, divided by its size. Hardware cost: a digital
matrix-vector unit and SRAM for the chosen weights (the count is reported).
"""

from __future__ import annotations

import torch

from romer.calibration.statistics import sequence_perplexity
from romer.noise.chip import ChipHandle


def tensor_sensitivity(chip: ChipHandle, holdout: torch.Tensor, batch_size: int, max_size: float,
                       names: list[str] | None = None) -> list[dict]:
    """Per on-chip tensor (of `names`, default all) no larger than `max_size` weights: the held-out perplexity
    it alone gives back when it runs digitally, most per weight first."""
    base = sequence_perplexity(chip.model, holdout, batch_size)
    results = []
    for tensor in chip.tensors:
        size = chip.originals[tensor.name].numel()
        if tensor.name in chip.digital or size > max_size or (names is not None and tensor.name not in names):
            continue
        chip.make_digital(tensor.name)
        ppl = sequence_perplexity(chip.model, holdout, batch_size)
        chip.make_digital(tensor.name, False)
        results.append({"tensor": tensor.name, "weights": size, "ppl_gain": base - ppl,
                        "gain_per_mweight": (base - ppl) / size * 1e6})
    return sorted(results, key=lambda r: r["gain_per_mweight"], reverse=True)


def choose_digital(chip: ChipHandle, holdout: torch.Tensor, batch_size: int, budget: float) -> tuple[list[str], list[dict]]:
    """Greedy by gain per weight, positive gains only, within budget; returns (chosen, all measurements)."""
    allowance = int(budget * chip.on_chip_parameters)
    measured = tensor_sensitivity(chip, holdout, batch_size, allowance)
    chosen, used = [], 0
    for record in measured:
        if record["ppl_gain"] > 0 and used + record["weights"] <= allowance:
            chosen.append(record["tensor"])
            used += record["weights"]
    return chosen, measured
