"""Ours: a per-expert router-logit bias that brings each expert's load on the chip back to its clean load,
in the spirit of DeepSeek-V3's auxiliary-loss-free balancing bias (SPEC §3):
b ← b + rate · (log clean share − log chip share), a few calibration passes; a replica pair counts as one expert.
"""

from __future__ import annotations

import torch

from romer.calibration.statistics import routing_stats
from romer.calibration.step import Step, register_step

EPS = 1e-6


class LoadBias(Step):
    name = "load_bias"
    options = ("load_bias", "bias_steps", "bias_rate")

    def enabled(self, config, chip) -> bool:
        return config.load_bias

    def reads(self, config) -> tuple[str, ...]:
        return self.options if config.load_bias else ("load_bias",)

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"routing"})

    def run(self, context) -> None:
        config, calibration, clean = context.config, context.calibration, context.clean_routing()
        targets, groups = [], []
        for layer in range(len(clean.counts)):
            transform = calibration.transform(layer)
            copies = {copy: hot for hot, copy in transform.replicas}
            keep = torch.tensor([e not in copies for e in range(clean.counts[layer].numel())])
            target = clean.shares(layer).clone()
            target[~keep] = 0
            targets.append(target / target.sum())
            groups.append((keep, copies))
            transform.bias = torch.zeros_like(target, dtype=torch.float32)
        for _ in range(config.bias_steps):
            now = routing_stats(context.model, context.tokens.fit, config.batch_size)
            for layer, (keep, copies) in enumerate(groups):
                share = now.shares(layer).clone()
                for copy, hot in copies.items():
                    share[hot] += share[copy]
                    share[copy] = 0
                step = config.bias_rate * ((targets[layer] + EPS).log() - (share + EPS).log())
                transform = calibration.transform(layer)
                transform.bias = transform.bias + torch.where(keep, step, torch.zeros_like(step)).float()


register_step(LoadBias())
