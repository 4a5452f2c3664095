"""`retune`: fit each chip's digital periphery against its clean twin (SPEC §3 d).

Every programmed chip comes with a free, exact teacher: the clean model in software. After
programming, without touching a conductance, we set only digital parameters of that chip:

- the norm gains (digital already; re-set per chip, counted apart from the budget);
- a per-expert router-logit bias in each MoE layer;
- each on-chip matrix's per-column digital gain and offset after its ADCs (`ColumnCorrection`);
- low-rank digital adapters U·V on the most noise-sensitive matrices (sensitivity measured on
  this chip, on held-out calibration tokens), the rank of each chosen by what the budget leaves.

Everything added is counted against `retune_budget` × the on-chip weights. Each linear layer's
corrections start from their least-squares values against the clean weights on the chip's own
inputs (`retune_start.py`). Two engines fit them (`retune_engine`, recorded in the report):

- `end_to_end`: Adam on unlabeled calibration tokens minimises KL(clean ‖ chip) of the next-token
  distributions plus a weighted relative error of every decoder layer's output against the clean
  twin's, each step a forward and backward pass through the whole chip; the held-out KL picks the
  best step;
- `blockwise` (`blockwise.py`): one decoder layer at a time on its cached inputs, one block in
  memory, optionally followed by `retune_polish_steps` end-to-end steps.

No gradient reaches an on-chip weight (the chip's weights are detached inside `analog_linear`),
and `Calibration.remove()` undoes it all.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from romer.calibration.blockwise import block_sensitivity, fit_blockwise
from romer.calibration.registry import Method, register_method
from romer.calibration.methods.offload import tensor_sensitivity
from romer.calibration.retune_start import least_squares_start
from romer.calibration.norms import norm_gains
from romer.calibration.state import Calibration
from romer.calibration.step import Step, register_step
from romer.calibration.teacher import Targets
from romer.calibration.trainable import training_only
from romer.evaluation.perplexity import sequence_perplexity
from romer.noise.chip import ChipHandle
from romer.noise.digital import ColumnCorrection


@dataclass(frozen=True)
class Plan:
    """What is re-tuned on one chip: correction shapes per tensor, and the parameter counts."""

    columns: tuple[str, ...]     # tensors with per-column gain and offset
    ranks: dict                  # tensor → adapter rank
    router_bias: bool
    norms: tuple[str, ...]       # parameter names of the tuned norm gains
    added: int                   # digital parameters added or re-set (norm gains included): all counted in the budget
    budget: int
    norm_parameters: int         # of those, the existing digital parameters re-set (norm gains)
    plan_tokens: int             # held-out tokens the adapters' ranking read (0: no adapters, no ranking)


def matrix_shape(chip: ChipHandle, name: str) -> tuple[int | None, int, int]:
    shape = chip.shape(name)
    return (None, *shape) if len(shape) == 2 else tuple(shape)


def _column_cost(chip: ChipHandle, name: str) -> int:
    slots, out_dim, _ = matrix_shape(chip, name)
    return 2 * out_dim * (slots or 1)


def _rank_cost(chip: ChipHandle, name: str) -> int:
    slots, out_dim, in_dim = matrix_shape(chip, name)
    return (out_dim + in_dim) * (slots or 1)


def plan(calibration: Calibration, config, holdout: torch.Tensor, teacher=None) -> Plan:
    """Spend the budget (`retune_budget` × the chip's weights, the one denominator of every share), cheapest and most
    general first: the norm gains re-set; router biases; per-column gain and offset of every on-chip matrix that is
    not a fused expert tensor; adapters on the matrices that noise hurts most per weight (measured on this chip,
    held-out tokens), each at the largest rank ≤ retune_rank that still fits; then per-column corrections of fused
    expert tensors while the budget lasts. Every part is counted, the re-set norm gains included."""
    chip = calibration.chip
    budget = int(config.retune_budget * chip.total_parameters)
    gains = norm_gains(calibration.model) if config.retune_norms else {}
    norm_parameters = sum(p.numel() for p in gains.values())
    if norm_parameters > budget:
        gains, norm_parameters = {}, 0
    used = norm_parameters
    experts = sum(layer.num_experts for layer in calibration.layers)
    bias = config.retune_router_bias and used + experts <= budget
    used += experts if bias else 0
    on_chip = chip.on_chip_names()
    matrices = [n for n in on_chip if len(chip.shape(n)) == 2]
    fused = [n for n in on_chip if len(chip.shape(n)) > 2]
    columns = []

    def add_columns(names):
        nonlocal used
        for name in names:
            if config.retune_columns and used + _column_cost(chip, name) <= budget:
                columns.append(name)
                used += _column_cost(chip, name)

    add_columns(matrices)
    ranks, plan_tokens = {}, 0
    if config.retune_rank > 0:
        probe = plan_windows(holdout, config)
        plan_tokens = int(probe.numel())
        if config.retune_plan == "blockwise":
            ranked = block_sensitivity(calibration.model, chip, probe, config.batch_size, matrices,
                                       teacher.holdout_layers)
        else:
            ranked = tensor_sensitivity(calibration.model, chip, probe, config.batch_size, max_size=math.inf,
                                        names=matrices)
        for record in ranked:
            if record["gain"] <= 0:
                break
            rank = min(config.retune_rank, (budget - used) // _rank_cost(chip, record["tensor"]))
            if rank >= 1:
                ranks[record["tensor"]] = int(rank)
                used += int(rank) * _rank_cost(chip, record["tensor"])
    add_columns(fused)
    return Plan(tuple(columns), ranks, bias, tuple(gains), used, budget, norm_parameters, plan_tokens)


def plan_windows(holdout: torch.Tensor, config) -> torch.Tensor:
    """The held-out windows the planner ranks the matrices on: the first `retune_plan_tokens` worth, at least one."""
    if config.retune_plan_tokens is None:
        return holdout
    return holdout[: max(1, config.retune_plan_tokens // holdout.shape[1])]


@contextlib.contextmanager
def checkpointed_in_eval_mode(model: nn.Module) -> Iterator[None]:
    """Gradient checkpointing per decoder layer (each layer recomputed in the backward pass instead of keeping its
    activations) with the model in eval mode: transformers checkpoints a layer only while that layer is training, so
    only the decoder layers themselves are marked training, never their modules (dropout, router jitter stay off)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    if hasattr(model, "activation_checkpointing_enable"):  # the newer name; the older one warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False
        (getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable)()


def fit_loss(model: nn.Module, batch: torch.Tensor, target: Targets, hidden_weight: float = 0.0) -> torch.Tensor:
    """Mean over tokens of KL(clean ‖ chip), plus `hidden_weight` × the mean over decoder layers of the relative
    squared error of the layer's output (more signal per calibration token than the logits alone)."""
    device = next(model.parameters()).device
    result = model(input_ids=batch.to(device), output_hidden_states=bool(hidden_weight and target.hidden))
    loss = target.kl(result.logits.float().log_softmax(-1)).mean()
    if hidden_weight and target.hidden:
        errors = []
        for mine, clean in zip(result.hidden_states[1:], target.hidden):
            clean = clean.to(device, torch.float32)
            errors.append((mine.float() - clean).pow(2).sum(-1).mean() / clean.pow(2).sum(-1).mean())
        loss = loss + hidden_weight * torch.stack(errors).mean()
    return loss


@torch.no_grad()
def holdout_kl(model: nn.Module, sequences: torch.Tensor, targets: list[Targets], batch_size: int) -> float:
    total = 0.0
    for i, target in enumerate(targets):
        total += float(fit_loss(model, sequences[i * batch_size:(i + 1) * batch_size], target)) * len(target)
    return total / len(sequences)


def retune(context) -> None:
    """Install and fit the digital corrections of the context's chip; the fit's record goes to the report."""
    calibration, config, tokens, chip, model = (context.calibration, context.config, context.tokens, context.chip,
                                                context.model)
    started = time.perf_counter()
    holdout = tokens.require_holdout("retune")
    teacher = context.teacher(*teacher_extras(config))
    planning = time.perf_counter()
    chosen = plan(calibration, config, holdout, teacher)
    plan_seconds = time.perf_counter() - planning
    device = next(model.parameters()).device
    blockwise = config.retune_engine == "blockwise"

    trainable: dict[str, list[nn.Parameter]] = {}  # module path → its digital parameters (the block-wise fit's owner)
    installed = dict(calibration.correction_items()) if config.retune_start == "installed" else {}
    continued = []
    for name in sorted(set(chosen.columns) | set(chosen.ranks)):
        slots, out_dim, in_dim = matrix_shape(chip, name)
        module, attribute = chip.module_of(name)
        correction = ColumnCorrection(out_dim, in_dim, slots, columns=name in chosen.columns,
                                      rank=chosen.ranks.get(name, 0), seed=chip.describe()["seed"],
                                      device=getattr(module, attribute).device)  # beside the tensor it corrects
        earlier = installed.get(name)
        if earlier is not None and {k: v.shape for k, v in earlier.state_dict().items()} == \
                {k: v.shape for k, v in correction.state_dict().items()}:
            correction.load_state_dict(earlier.state_dict())  # the same shape: the fit goes on from its values
            continued.append(name)
        calibration.attach_correction(name, correction)
        trainable[name] = list(correction.parameters())
    if chosen.router_bias:
        for index, layer in enumerate(calibration.layers):
            transform = calibration.transform(index)
            start = transform.bias if transform.bias is not None else torch.zeros(layer.num_experts)
            calibration.assign(transform, "bias", nn.Parameter(start.detach().clone().float().to(device)))
            trainable[f"{layer.name}.router_bias"] = [transform.bias]
    programmed_kl = holdout_kl(model, holdout, teacher.holdout, config.batch_size)
    started_by = (least_squares_start(model, chip, tokens.fit, config.batch_size)
                  if config.retune_start == "least_squares" and not blockwise else [])
    gains = norm_gains(model)
    for name in chosen.norms:
        calibration.retune_norm(name, gains[name])
        trainable[name] = [gains[name]]

    params = [p for ps in trainable.values() for p in ps]
    if not params:  # the budget holds nothing (not even the norm gains): nothing to fit
        calibration.report["retune"] = {"parameters_added": 0, "budget_parameters": chosen.budget,
                                        "budget_fraction_used": 0.0, "norm_parameters": 0, "norm_gains": 0,
                                        "chip_weights": chip.total_parameters, "columns": [], "ranks": {},
                                        "router_bias": False, "seconds": time.perf_counter() - started,
                                        "engine": config.retune_engine, "skipped": "the budget holds no correction"}
        return
    polish = config.retune_polish_steps if blockwise else config.retune_steps
    checkpointing = polish > 0 and (config.retune_checkpointing == "on" or (config.retune_checkpointing == "auto"
                                                                            and device.type != "cpu"))
    fit_started = time.perf_counter()
    history: dict = {}
    with training_only(model, params):
        if blockwise:
            history["blockwise"] = fit_blockwise(model, chip, trainable, tokens, teacher, config)
        if polish:
            with checkpointed_in_eval_mode(model) if checkpointing else contextlib.nullcontext():
                history |= fit_end_to_end(model, params, polish, tokens.fit, teacher.fit, holdout, teacher.holdout,
                                          config)
    if not polish:
        history["holdout_kl_after"] = holdout_kl(model, holdout, teacher.holdout, config.batch_size)
    calibration.report["retune"] = {
        "engine": config.retune_engine, "checkpointing": checkpointing, "columns": list(chosen.columns),
        "ranks": chosen.ranks, "router_bias": chosen.router_bias,
        "norm_gains": len(chosen.norms), "parameters_added": chosen.added, "budget_parameters": chosen.budget,
        "budget_fraction_used": chosen.added / chip.total_parameters, "norm_parameters": chosen.norm_parameters,
        "chip_weights": chip.total_parameters, "least_squares_start": len(started_by),
        "plan_tokens": chosen.plan_tokens, "plan_seconds": plan_seconds, "plan_engine": config.retune_plan,
        "continued_from_installed": continued,
        "holdout_kl_before": programmed_kl, "teacher_top_k": teacher.top_k, "seconds": time.perf_counter() - started,
        "seconds_before_fit": fit_started - started, "fit_seconds": time.perf_counter() - fit_started, **history}


def teacher_extras(config) -> tuple[str, ...]:
    """What the fit asks of the clean twin besides its next-token distributions."""
    blockwise = config.retune_engine == "blockwise"
    hidden = config.retune_hidden_weight > 0 and (not blockwise or config.retune_polish_steps > 0)
    layers = blockwise or (config.retune_plan == "blockwise" and config.retune_rank > 0)
    return (("layers",) if layers else ()) + (("hidden",) if hidden else ())


def fit_end_to_end(model: nn.Module, params: list[nn.Parameter], steps: int, fit: torch.Tensor, teacher_fit: list[Targets],
         holdout: torch.Tensor, teacher_holdout: list[Targets], config) -> dict:
    """Adam on the loss over the fit batches (a seeded order); every `retune_eval_every` steps the held-out KL is
    measured and the parameters of the best step are kept."""
    batch = config.batch_size
    optimizer = torch.optim.Adam(params, lr=config.retune_lr)
    order = torch.Generator().manual_seed(0)
    batches = len(teacher_fit)
    start_kl = best_kl = holdout_kl(model, holdout, teacher_holdout, batch)
    best_state, best_step = [p.detach().clone() for p in params], 0
    fit_losses = []
    permutation: list[int] = []
    for step in range(1, steps + 1):
        if not permutation:
            permutation = torch.randperm(batches, generator=order).tolist()
        index = permutation.pop()
        loss = fit_loss(model, fit[index * batch:(index + 1) * batch], teacher_fit[index], config.retune_hidden_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fit_losses.append(float(loss.detach()))
        if step % config.retune_eval_every == 0 or step == steps:
            held = holdout_kl(model, holdout, teacher_holdout, batch)
            if held < best_kl:
                best_kl, best_step = held, step
                best_state = [p.detach().clone() for p in params]
    with torch.no_grad():
        for param, value in zip(params, best_state):
            param.copy_(value)
    first = fit_losses[: max(1, batches)]
    last = fit_losses[-max(1, batches):]
    return {"steps": steps, "best_step": best_step, "holdout_kl_start": start_kl,
            "holdout_kl_after": best_kl, "fit_loss_first_epoch": sum(first) / len(first),
            "fit_loss_last_epoch": sum(last) / len(last)}


RETUNE_OPTIONS = ("retune_budget", "retune_rank", "retune_norms", "retune_columns", "retune_router_bias",
                  "retune_engine", "retune_block_steps", "retune_block_lr", "retune_polish_steps", "retune_steps", "retune_lr",
                  "retune_start", "retune_hidden_weight", "retune_eval_every", "retune_checkpointing",
                  "retune_plan_tokens", "retune_plan")
END_TO_END_ONLY = ("retune_steps",)
BLOCKWISE_ONLY = ("retune_block_steps", "retune_block_lr", "retune_polish_steps")


def engine_reads(config, options: tuple[str, ...]) -> tuple[str, ...]:
    """`options` less those the chosen engine never reads (an explicit `retune_steps` under the block-wise engine is
    refused, not ignored); the end-to-end loss's options only where an end-to-end pass runs."""
    blockwise = config.retune_engine == "blockwise"
    unread = END_TO_END_ONLY if blockwise else BLOCKWISE_ONLY
    if blockwise and config.retune_polish_steps == 0:
        unread += ("retune_hidden_weight", "retune_checkpointing", "retune_lr")
    return tuple(o for o in options if o not in unread)


class Retune(Step):
    """The fit, always (method `retune`); on the clean model (no chip) there is nothing to fit."""

    name = "retune"
    options = RETUNE_OPTIONS

    def enabled(self, config, chip) -> bool:
        return chip is not None

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip)

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"teacher", *teacher_extras(config)})

    def reads(self, config) -> tuple[str, ...]:
        return engine_reads(config, self.options)

    def run(self, context) -> None:
        retune(context)


class RetuneCandidate(Retune):
    """The fit as a last candidate (`retune=True`), kept only if held-out perplexity improves."""

    name = "retune-candidate"
    options = ("retune",) + RETUNE_OPTIONS

    def enabled(self, config, chip) -> bool:
        return config.retune and chip is not None

    def reads(self, config) -> tuple[str, ...]:
        return engine_reads(config, self.options) if config.retune else ("retune",)

    def run(self, context) -> None:
        holdout = context.tokens.require_holdout("retune")
        before = sequence_perplexity(context.model, holdout, context.batch_size)
        mark = context.calibration.mark()
        retune(context)
        after = sequence_perplexity(context.model, holdout, context.batch_size)
        context.calibration.report["retune"] |= {"holdout_ppl_before": before, "holdout_ppl_after": after,
                                                 "kept": after < before}
        if after >= before:
            context.calibration.rollback(mark)


register_step(Retune())
register_step(RetuneCandidate())
register_method(Method("retune", "ours: each chip's digital periphery (norm gains, router biases, per-column gain and "
                                 "offset, low-rank adapters within 1 % of the on-chip weights) fitted to the clean "
                                 "twin on calibration tokens", steps=("retune",)))
