"""`retune-agnostic`: one set of digital corrections fitted over many chip draws, used on every chip (ours, in the
spirit of AHWA-LoRA: Li, Ferro, Lammie et al., arXiv 2411.17367, whose digital LoRA adapters are trained once under
noise, the analog weights fixed, and deployed on every chip).

`retune` fits each chip to its clean twin; its corrections do not transfer to another chip. Here the same digital
parts retune sets (router biases, norm gains, per-column gains and offsets, low-rank adapters, planned within
`retune_budget` on the first fit chip) are fitted once, by Adam on the same loss, over `retune_over_chips` chip
instances of the configuration in force: chip seeds AGNOSTIC_SEED_BASE + i, drawn for the fit only, visited in turn
for `retune_eval_every` steps each (`retune_steps` steps per fit chip in all); the corrections start at zero (a
least-squares start belongs to one chip), and the best full cycle by held-out KL averaged over the fit chips is kept.
The fit is computed once per (model, chip configuration, options, calibration tokens) and then only installed: on
the chip being calibrated, which the fit never saw, nothing is measured.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import torch
from torch import nn

from romer.calibration.registry import Method, register_method
from romer.calibration.methods.retune import RETUNE_OPTIONS, Retune, holdout_kl, fit_loss, matrix_shape, plan
from romer.calibration.norms import norm_gains
from romer.calibration.state import Calibration
from romer.calibration.trainable import training_only
from romer.calibration.step import register_step
from romer.noise.digital import ColumnCorrection

AGNOSTIC_SEED_BASE = 1_000_000  # the fit's chip seeds: AGNOSTIC_SEED_BASE, AGNOSTIC_SEED_BASE + 1, ...


@dataclass
class Fitted:
    """One fit over chips: the corrections' values by tensor, the router biases by layer, the norm gains by name."""

    corrections: dict[str, tuple[tuple, dict[str, torch.Tensor]]]  # name → ((out, in, slots, columns, rank), state)
    biases: dict[int, torch.Tensor]
    norms: dict[str, torch.Tensor]
    report: dict


_FITS: "WeakKeyDictionary[nn.Module, dict[str, Fitted]]" = WeakKeyDictionary()


def _key(context) -> str:
    options = {name: getattr(context.config, name) for name in RetuneAgnostic.options + ("batch_size",)}
    tokens = hashlib.sha256(context.tokens.fit.numpy().tobytes() + context.tokens.holdout.numpy().tobytes())
    return json.dumps([options, context.chip.config.model_dump(mode="json"), tokens.hexdigest()], sort_keys=True)


def fit_over_chips(context) -> Fitted:
    chip, config, model, tokens = context.chip, context.config, context.model, context.tokens
    started = time.perf_counter()
    seeds = [AGNOSTIC_SEED_BASE + i for i in range(config.retune_over_chips)]
    holdout = tokens.require_holdout("retune-agnostic")
    teacher = context.teacher("hidden")
    device = next(model.parameters()).device
    with chip.other_instance(seeds[0]) as first:
        chosen = plan(Calibration(model, config, first), config, holdout)
    shapes = {name: matrix_shape(chip, name) for name in sorted(set(chosen.columns) | set(chosen.ranks))}
    corrections = {name: ColumnCorrection(out_dim, in_dim, slots, columns=name in chosen.columns,
                                          rank=chosen.ranks.get(name, 0), seed=0,
                                          device=getattr(chip.module_of(name)[0], chip.module_of(name)[1]).device)
                   for name, (slots, out_dim, in_dim) in shapes.items()}
    scratch = Calibration(model, config, None)  # the model-level parts during the fit, undone after it
    trainable = [p for c in corrections.values() for p in c.parameters()]
    biases = {}
    if chosen.router_bias:
        for index, layer in enumerate(scratch.layers):
            transform = scratch.transform(index)
            scratch.assign(transform, "bias", nn.Parameter(torch.zeros(layer.num_experts, device=device)))
            biases[index] = transform.bias
            trainable.append(transform.bias)
    gains = norm_gains(model)
    for name in chosen.norms:
        scratch.retune_norm(name, gains[name])
        trainable.append(gains[name])
    try:
        return _fit(context, seeds, corrections, biases, chosen, gains, trainable, started)
    finally:
        scratch.remove()


def _fit(context, seeds, corrections, biases, chosen, gains, trainable, started) -> Fitted:
    chip, config, model, tokens = context.chip, context.config, context.model, context.tokens
    holdout, teacher = tokens.holdout, context.teacher("hidden")
    optimizer = torch.optim.Adam(trainable, lr=config.retune_lr)
    order = torch.Generator().manual_seed(0)
    batch, batches, permutation = config.batch_size, len(teacher.fit), []
    cycles = max(1, config.retune_steps // config.retune_eval_every)
    best = (float("inf"), None, 0)
    history = []
    with training_only(model, trainable):
        for cycle in range(1, cycles + 1):
            held = []
            for seed in seeds:
                with chip.other_instance(seed) as other:
                    for name, correction in corrections.items():
                        other.attach_correction(name, correction)
                    for _ in range(config.retune_eval_every):
                        if not permutation:
                            permutation = torch.randperm(batches, generator=order).tolist()
                        index = permutation.pop()
                        loss = fit_loss(model, tokens.fit[index * batch:(index + 1) * batch], teacher.fit[index],
                                        config.retune_hidden_weight)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                    with torch.no_grad():
                        held.append(holdout_kl(model, holdout, teacher.holdout, batch))
            mean_kl = sum(held) / len(held)
            history.append(mean_kl)
            if mean_kl < best[0]:
                best = (mean_kl, [p.detach().clone() for p in trainable], cycle)
    with torch.no_grad():
        for param, value in zip(trainable, best[1]):
            param.copy_(value)
    fitted = Fitted(
        corrections={name: ((c.out_dim, c.in_dim, c.slots, c.gain is not None, c.rank),
                            {k: v.detach().clone() for k, v in c.state_dict().items()})
                     for name, c in corrections.items()},
        biases={index: bias.detach().clone() for index, bias in biases.items()},
        norms={name: gains[name].detach().clone() for name in chosen.norms},
        report={"fit_seeds": seeds, "steps": cycles * config.retune_eval_every * len(seeds), "best_cycle": best[2],
                "holdout_kl_by_cycle": history, "parameters_added": chosen.added, "budget_parameters": chosen.budget,
                "columns": list(chosen.columns), "ranks": chosen.ranks, "router_bias": chosen.router_bias,
                "norm_gains": len(chosen.norms), "fit_seconds": time.perf_counter() - started})
    return fitted


class RetuneAgnostic(Retune):
    """retune's step (on a chip, with held-out tokens and the clean teacher), fitted over other chips instead."""

    name = "retune-agnostic"
    options = tuple(o for o in RETUNE_OPTIONS if o not in ("retune_start", "retune_checkpointing", "retune_engine",
                                                           "retune_block_steps", "retune_block_lr",
                                                           "retune_polish_steps", "retune_plan")) + (
        "retune_over_chips",)

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"teacher", "hidden"})

    def reads(self, config) -> tuple[str, ...]:
        return self.options  # always end to end: its fit visits several chips in turn

    @torch.no_grad()
    def run(self, context) -> None:
        fits = _FITS.setdefault(context.model, {})
        key = _key(context)
        cached = key in fits
        if not cached:
            if context.chip.seed in range(AGNOSTIC_SEED_BASE, AGNOSTIC_SEED_BASE + context.config.retune_over_chips):
                raise_fit_seed(context.chip.seed)
            fits[key] = fit_over_chips(context)
        fitted, calibration, chip = fits[key], context.calibration, context.chip
        for name, ((out_dim, in_dim, slots, columns, rank), state) in fitted.corrections.items():
            module, attribute = chip.module_of(name)
            correction = ColumnCorrection(out_dim, in_dim, slots, columns=columns, rank=rank,
                                          device=getattr(module, attribute).device)
            correction.load_state_dict(state)
            correction.requires_grad_(False)
            calibration.attach_correction(name, correction)
        for index, bias in fitted.biases.items():
            calibration.assign(calibration.transform(index), "bias", bias.clone())
        gains = norm_gains(context.model)
        for name, value in fitted.norms.items():
            calibration.retune_norm(name, gains[name])
            gains[name].copy_(value)
        calibration.report["retune-agnostic"] = {**fitted.report, "reused": cached}


def raise_fit_seed(seed: int) -> None:
    from romer.errors import RomerError

    raise RomerError(f"chip seed {seed} is one of retune-agnostic's fit chips (from {AGNOSTIC_SEED_BASE}); evaluate it "
                     "on chips it never saw (a smaller seed)")


register_step(RetuneAgnostic())
register_method(Method("retune-agnostic", "ours, after AHWA-LoRA: one set of retune's digital corrections fitted once "
                                          "over retune_over_chips chip draws, used unchanged on every chip",
                       steps=("retune-agnostic",)))
register_method(Method("retune-from-agnostic", "ours: retune's per-chip fit started from retune-agnostic's corrections "
                                               "(router biases and norm gains as the agnostic fit left them, no "
                                               "least-squares start)",
                       steps=("retune-agnostic", "retune"), defaults={"retune_start": "installed"}))
