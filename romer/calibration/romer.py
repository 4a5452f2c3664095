"""ROMER, top to bottom: calibrate an MoE model that sits on a simulated chip, without training.

    chip = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    calibration = romer.calibrate_(model, RomerConfig(method="romer"), calib_ids, chip=chip)
    ...                                   # evaluate the calibrated noisy model
    calibration.remove()                  # back to the plain noisy model, bit for bit

1. Expert replacement (Zhou, Feng et al. 2026, §2.1). Count each expert's selections per layer on
   calibration tokens under noise; an expert below τ × the uniform share is under-activated and its
   slot is re-programmed with a hot expert (pairing rule: `RomerConfig.pairing`).
2. Router calibration (§2.2), "percentile-based normalisation": one of the readings in router.py,
   from the router logits on calibration tokens (`RomerConfig.router`; default `renorm`, each
   expert's median and IQR mapped onto the clean twin's, the reading that measured best).
   `RomerConfig.order = "rc-er"` calibrates the router first and replaces only what is still starved.
3. Ours, in `best`: a per-expert logit bias that brings each expert's noisy load back to its clean
   load, and the most noise-sensitive tensors moved to the digital periphery within a weight budget;
   the free parameters chosen on held-out calibration tokens (`tune.py`).
4. Ours, method `retune` (a candidate in `best` with `retune=True`): the chip's digital periphery
   fitted to the clean twin (retune.py).
Routing changes go through the family adapter's routing-from-logits, so every family works.
"""

from __future__ import annotations

import torch
from torch import nn

from romer.calibration.config import RomerConfig, romer_config
from romer.calibration.methods import Method, get_method
from romer.calibration.offload import choose_digital
from romer.calibration.replacement import plan_replacements
from romer.calibration.router import equalize_map, fences, robust_map
from romer.calibration.state import Calibration
from romer.calibration.statistics import RoutingStats, routing_stats, sequence_perplexity
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
    needs_holdout = config.tune or ((config.digital_budget > 0 or config.retune) and chip is not None)
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
    if method.retune:
        fields["retune"] = True
    elif not method.beyond:
        fields["retune"] = False
    return romer_config(**fields)


def run_steps(model: nn.Module, config: RomerConfig, method: Method, tokens: CalibrationTokens,
              chip: ChipHandle | None) -> Calibration:
    calibration = Calibration(model, config, chip)
    batch = config.batch_size
    use_router = method.router and config.router != "none"
    clean = None
    if (use_router and config.router == "renorm") or (method.beyond and config.load_bias):
        clean = clean_reference(model, tokens.fit, batch, chip)

    # 1. expert replacement and 2. router calibration, in the configured order
    steps = {"er": lambda: replace_cold_experts(calibration, config, tokens.fit),
             "rc": lambda: calibrate_router(calibration, config, tokens.fit, clean)}
    for step in config.order.split("-"):
        if (step == "er" and method.replace and config.max_replaced > 0) or (step == "rc" and use_router):
            steps[step]()

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

    # 4. ours: re-tune the chip's digital periphery against its clean twin (retune.py); in best, a candidate
    if config.retune and chip is not None:
        retune_step(calibration, config, tokens, keep_only_if_better=not method.retune)
    return calibration


def retune_step(calibration: Calibration, config: RomerConfig, tokens: CalibrationTokens,
                keep_only_if_better: bool) -> None:
    from romer.calibration.retune import retune

    holdout = tokens.require_holdout("retune")
    before = sequence_perplexity(calibration.model, holdout, config.batch_size) if keep_only_if_better else None
    mark = calibration.mark()
    retune(calibration, config, tokens)
    if before is not None:
        after = sequence_perplexity(calibration.model, holdout, config.batch_size)
        calibration.report["retune"] |= {"holdout_ppl_before": before, "holdout_ppl_after": after,
                                         "kept": after < before}
        if after >= before:
            calibration.rollback(mark)


def replace_cold_experts(calibration: Calibration, config: RomerConfig, sequences: torch.Tensor) -> None:
    """Expert replacement, from the activation frequencies of the model as it now is on the chip."""
    noisy = routing_stats(calibration.model, sequences, config.batch_size)
    calibration.report["noisy_shares"] = [noisy.shares(i).tolist() for i in range(len(noisy.counts))]
    for layer in range(len(noisy.counts)):
        for replacement in plan_replacements(layer, noisy.shares(layer), config.tau, config.max_replaced,
                                             config.pairing):
            calibration.replace(replacement)
            if config.pairing == "replica":
                calibration.transform(layer).replicas.append((replacement.hot, replacement.cold))


def calibrate_router(calibration: Calibration, config: RomerConfig, sequences: torch.Tensor,
                     clean: RoutingStats | None) -> None:
    """Router calibration, from the logits of the model as it now is (router.py: the readings)."""
    if config.router == "token":
        for layer in range(len(calibration.layers)):
            calibration.transform(layer).token = (config.q_low, config.q_high, config.lam)
        return
    noisy = routing_stats(calibration.model, sequences, config.batch_size, logits=True)
    for layer, logits in enumerate(noisy.logits):
        transform = calibration.transform(layer)
        if config.router == "clamp":
            transform.low, transform.high = fences(logits, config.q_low, config.q_high, config.lam)
        else:
            (transform.noisy_median, transform.noisy_iqr, transform.target_median, transform.target_iqr) = (
                robust_map(logits, clean.logits[layer], config.q_low, config.q_high) if config.router == "renorm"
                else equalize_map(logits, config.q_low, config.q_high))


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
