"""Ours: `outliers` and `outlier-retune`. Before programming, the largest weights of each scale segment of every
on-chip tensor are held in digital units, exactly, so that the arrays' scale, and with it every device and
periphery error in weight units, follows the bulk of the weights (`romer/noise/outliers.py`, after SpQR's sparse
outliers, Dettmers et al. 2023). Data-free: no calibration text is read.

`outlier-retune` then runs `retune`'s fit of the digital periphery on the chip so programmed, with half of the 1 %
digital share in outliers (`outlier_fraction` 0.25 %, two numbers each) and half in `retune`'s corrections
(`retune_budget` 0.5 %).

Digital cost: two numbers per outlier weight (value and position), counted by `Calibration.digital_share`.
"""

from __future__ import annotations

import torch

from romer.calibration.registry import Method, register_method
from romer.calibration.step import Step, register_step


class OutlierSplit(Step):
    name = "outliers"
    options = ("outlier_fraction",)

    def enabled(self, config, chip) -> bool:
        return chip is not None and config.outlier_fraction > 0  # the clean model holds every weight exactly

    @torch.no_grad()
    def run(self, context) -> None:
        chip, calibration = context.chip, context.calibration
        for name in chip.on_chip_names():
            if name not in chip.decomposed_names():
                calibration.split_outliers(name, context.config.outlier_fraction)
        calibration.report["outliers"] = {"fraction": context.config.outlier_fraction,
                                          "weights": chip.outlier_weights(),
                                          "digital_share": calibration.digital_share()}


register_step(OutlierSplit())
register_method(Method("outliers", "ours: the largest weights of each tile held in digital units (two numbers each), so "
                                   "the arrays' scale and errors follow the bulk of the weights; data-free",
                       steps=("outliers",)))
register_method(Method("outlier-retune", "ours: outliers (0.25 % of the weights), then retune's fit of the digital "
                                         "periphery within 0.5 % of the on-chip weights",
                       steps=("outliers", "retune"), defaults={"retune_budget": 0.005}))
