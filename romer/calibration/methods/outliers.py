"""Ours: `outliers` and `outlier-retune`. Before programming, the largest weights of each scale segment of every
on-chip tensor are held in digital units, exactly, so that the arrays' scale, and with it every device and
periphery error in weight units, follows the bulk of the weights (`romer/noise/outliers.py`, after SpQR's sparse
outliers, Dettmers et al. 2023). Data-free: no calibration text is read.

`outlier-retune` then runs `retune`'s fit of the digital periphery on the chip so programmed, with half of the 1 %
digital share in outliers (`outlier_fraction` 0.25 %, two numbers each) and half in `retune`'s corrections
(`retune_budget` 0.5 %). It reads calibration text anyway, so by default it chooses attention's outlier share on the
held-out part (`outlier_attention=None`); `outliers` stays data-free (the same fraction everywhere) unless asked.

The outliers need not be spread evenly: at the same number of outliers, attention's tensors may hold
`outlier_attention` times the fraction the others hold (measured on romer-tiny, `cim-80c`: attention takes a larger
share of the damage per weight than the experts). With `outlier_attention=None` the factor is chosen among
`OUTLIER_ATTENTION_GRID` by the chip's perplexity on held-out calibration text (no clean twin: the chip alone).

Digital cost: two numbers per outlier weight (value and position), counted by `Calibration.digital_share`.
"""

from __future__ import annotations

import time

import torch

from romer.calibration.registry import Method, register_method
from romer.calibration.step import Step, register_step
from romer.evaluation.perplexity import sequence_perplexity

OUTLIER_ATTENTION_GRID = (1.0, 2.0, 4.0, 8.0)  # attention factors tried when `outlier_attention` is None


def role_fractions(sizes: dict[str, int], roles: dict[str, str], fraction: float, attention: float) -> dict[str, float]:
    """Each tensor's outlier fraction: attention's `attention` times the others', with as many outliers in all as
    `fraction` of every weight (attention's capped below one half)."""
    total = sum(sizes.values())
    held = sum(size for name, size in sizes.items() if roles[name] == "attention")
    rest = fraction * total / (attention * held + total - held)
    return {name: min(attention * rest, 0.49) if roles[name] == "attention" else rest for name in sizes}


class OutlierSplit(Step):
    name = "outliers"
    options = ("outlier_fraction", "outlier_attention")

    def enabled(self, config, chip) -> bool:
        return chip is not None and config.outlier_fraction > 0  # the clean model holds every weight exactly

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip) and config.outlier_attention is None

    @torch.no_grad()
    def run(self, context) -> None:
        chip, calibration, config = context.chip, context.calibration, context.config
        names = [name for name in chip.on_chip_names()
                 if name not in chip.decomposed_names() and not chip.decomposed_slots(name)]
        sizes = {name: chip.size(name) for name in names}
        roles = {name: chip.role(name) for name in names}

        def fractions(attention: float) -> dict[str, float]:
            return role_fractions(sizes, roles, config.outlier_fraction, attention)

        started = time.perf_counter()
        attention, tried = config.outlier_attention, {}
        if attention is None:
            holdout = context.tokens.require_holdout("the outliers' attention factor")
            attention, tried = calibration.choose_outliers(
                {candidate: fractions(candidate) for candidate in OUTLIER_ATTENTION_GRID},
                lambda: sequence_perplexity(context.model, holdout, config.batch_size))
        else:
            for name, share in fractions(attention).items():
                calibration.split_outliers(name, share)
        calibration.report["outliers"] = {"fraction": config.outlier_fraction, "attention": attention,
                                          "held_out_ppl": tried or None, "weights": chip.outlier_weights(),
                                          "digital_share": calibration.digital_share(),
                                          "seconds": time.perf_counter() - started}


register_step(OutlierSplit())
register_method(Method("outliers", "ours: the largest weights of each tile held in digital units (two numbers each), so "
                                   "the arrays' scale and errors follow the bulk of the weights; data-free",
                       steps=("outliers",)))
register_method(Method("outlier-retune", "ours: outliers (0.25 % of the weights, attention's share chosen on held-out "
                                         "calibration text), then retune's fit of the digital periphery within 0.5 % "
                                         "of the on-chip weights",
                       steps=("outliers", "retune"), defaults={"retune_budget": 0.005, "outlier_attention": None}))
