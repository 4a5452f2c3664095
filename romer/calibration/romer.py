"""ROMER, top to bottom: calibrate an MoE model that sits on a simulated chip, without training.

    chip = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    calibration = romer.calibrate_(model, RomerConfig(method="romer"), calib_ids, chip=chip)
    ...                                   # evaluate the calibrated noisy model
    calibration.remove()                  # back to the plain noisy model, bit for bit

1. Expert replacement (Zhou, Feng et al. 2026, §2.1). Count each expert's selections per layer on
   calibration tokens under noise; an expert below τ × the uniform share is under-activated and its
   slot is re-programmed with a hot expert (pairing rule: `RomerConfig.pairing`).
2. Router calibration (§2.2). From the router logits on calibration tokens, per expert, either clamp
   to the fences [Q1 − λ·IQR, Q3 + λ·IQR] or map the noisy median and IQR onto the clean model's.
3. Ours, in `best`: a per-expert logit bias that brings each expert's noisy load back to its clean
   load, and the most noise-sensitive tensors moved to the digital periphery within a weight budget;
   the free parameters chosen on held-out calibration tokens (`tune.py`).
Routing changes go through the family adapter's routing-from-logits, so every family works.
"""

from __future__ import annotations

import torch
from torch import nn

from romer.calibration.config import RomerConfig, romer_config
from romer.calibration.methods import Method, get_method
from romer.calibration.offload import choose_digital
from romer.calibration.replacement import plan_replacements
from romer.calibration.router import fences, robust_map
from romer.calibration.state import Calibration
from romer.calibration.statistics import RoutingStats, routing_stats
from romer.calibration.tokens import CalibrationTokens
from romer.errors import RomerError
from romer.evaluation.perplexity import default_window
from romer.noise.chip import ChipHandle

EPS = 1e-6


def calibrate_(model: nn.Module, config: RomerConfig, calib_ids: torch.Tensor,
               chip: ChipHandle | None = None) -> Calibration:
    """Calibrate `model` in place from unlabeled calibration tokens; returns the handle that undoes it.
    `chip` defaults to the chip the model sits on; without one, the clean model is calibrated (the
    clean-cost check), with its own routing as the "noisy" statistics."""
    if not isinstance(config, RomerConfig):
        raise RomerError("calibrate_ needs a RomerConfig; build one with romer.RomerConfig(method=...)")
    current = getattr(model, "_romer_calibration", None)
    if current is not None and not current.removed:
        raise RomerError("this model is already calibrated; remove() the previous calibration first")
    if chip is None:
        chip = getattr(model, "_romer_chip", None)
    chip = chip if chip is not None and not chip.restored else None
    method = get_method(config.method)
    config = with_method_defaults(config, method)
    window = config.window or default_window(model)
    needs_holdout = config.tune or (config.digital_budget > 0 and chip is not None)
    tokens = CalibrationTokens.split(calib_ids, window, config.calib_tokens, config.holdout if needs_holdout else 0.0)
    trials = []
    if config.tune:
        from romer.calibration.tune import tune

        config, trials = tune(model, config, tokens, chip)
    calibration = run_steps(model, config, method, tokens, chip)
    calibration.report["tokens"] = {"fit": tokens.fit.numel(), "holdout": tokens.holdout.numel(), "window": window}
    if trials:
        calibration.report["tuning"] = trials
    model._romer_calibration = calibration
    return calibration


def with_method_defaults(config: RomerConfig, method: Method) -> RomerConfig:
    """The method's defaults for the fields the user left unset; steps the method lacks switched off."""
    fields = config.model_dump()
    for key, value in method.defaults.items():
        if key not in config.model_fields_set:
            fields[key] = value
    if not method.beyond:
        fields |= {"load_bias": False, "digital_budget": 0.0, "tune": False}
    return romer_config(**fields)


def run_steps(model: nn.Module, config: RomerConfig, method: Method, tokens: CalibrationTokens,
              chip: ChipHandle | None) -> Calibration:
    calibration = Calibration(model, config, chip)
    batch = config.batch_size
    use_router = method.router and config.router != "none"
    clean = None
    if (use_router and config.router == "renorm") or (method.beyond and config.load_bias):
        clean = clean_reference(model, tokens.fit, batch, chip)

    # 1. expert replacement, from the noisy model's activation frequencies
    if method.replace and config.max_replaced > 0:
        noisy = routing_stats(model, tokens.fit, batch)
        calibration.report["noisy_shares"] = [noisy.shares(i).tolist() for i in range(len(noisy.counts))]
        for layer in range(len(noisy.counts)):
            for replacement in plan_replacements(layer, noisy.shares(layer), config.tau, config.max_replaced,
                                                 config.pairing):
                calibration.replace(replacement)
                if config.pairing == "replica":
                    calibration.transform(layer).replicas.append((replacement.hot, replacement.cold))

    # 2. router calibration, from the logits of the model as it now is
    if use_router:
        noisy = routing_stats(model, tokens.fit, batch, logits=True)
        for layer, logits in enumerate(noisy.logits):
            transform = calibration.transform(layer)
            if config.router == "clamp":
                transform.low, transform.high = fences(logits, config.q_low, config.q_high, config.lam)
            else:
                (transform.noisy_median, transform.noisy_iqr,
                 transform.clean_median, transform.clean_iqr) = robust_map(logits, clean.logits[layer],
                                                                           config.q_low, config.q_high)

    # 3. ours: load bias towards the clean load, then digital offload of the most sensitive tensors
    if method.beyond and config.load_bias:
        fit_load_bias(calibration, clean, tokens.fit, config)
    if method.beyond and config.digital_budget > 0 and chip is not None:
        chosen, measured = choose_digital(chip, tokens.require_holdout("digital offload"), batch,
                                          config.digital_budget)
        for name in chosen:
            calibration.make_digital(name)
        calibration.report["digital"] = {"budget": config.digital_budget, "on_chip_weights": chip.on_chip_parameters,
                                         "chosen_weights": sum(r["weights"] for r in measured if r["tensor"] in chosen),
                                         "sensitivity": measured[:20]}
    return calibration


def clean_reference(model: nn.Module, sequences: torch.Tensor, batch_size: int, chip: ChipHandle | None) -> RoutingStats:
    """Routing of the clean model (the chip's software twin) on the calibration tokens."""
    if chip is None:
        return routing_stats(model, sequences, batch_size, logits=True)
    with chip.suspended():
        return routing_stats(model, sequences, batch_size, logits=True)


def fit_load_bias(calibration: Calibration, clean: RoutingStats, sequences: torch.Tensor, config: RomerConfig) -> None:
    """b ← b + rate·(log clean share − log noisy share), a few passes; a replica pair counts as one expert."""
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
        now = routing_stats(calibration.model, sequences, config.batch_size)
        for layer, (keep, copies) in enumerate(groups):
            share = now.shares(layer).clone()
            for copy, hot in copies.items():
                share[hot] += share[copy]
                share[copy] = 0
            step = config.bias_rate * ((targets[layer] + EPS).log() - (share + EPS).log())
            transform = calibration.transforms[layer]
            transform.bias = transform.bias + torch.where(keep, step, torch.zeros_like(step)).float()
