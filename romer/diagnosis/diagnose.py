"""`diagnose`: before any calibration, where a chip's damage sits and what router calibration can reach.

On unlabeled sequences (the calibration split), for the clean model and each chip seed:
- per MoE layer: expert load (CV, starved experts) clean and noisy, top-k agreement with the clean
  routing, the systematic (per-expert offset) share of the router-logit shift and its size, and the
  router inputs' outlier ratio;
- for the model: the perplexity gap with noise on one role at a time (attention, dense MLP, experts,
  shared experts, router), and the gap that *perfect routing* closes: the chip run with the clean
  twin's routing decisions (the oracle no router-side calibration can beat).

Predicted ceiling of router-side calibration, per seed: routing share × systematic share, where the
routing share is what perfect routing recovers of the gap and the systematic share is the part of
the router-logit shift that per-expert percentile statistics can undo (the mean over layers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from romer.diagnosis.routing_shift import (outlier_ratio, replaying_routing, router_input_rms,
                                           shift_size, systematic_share)
from romer.errors import RomerError
from romer.evaluation.perplexity import sequence_perplexity
from romer.moe.telemetry import MAX_LOGIT_ROWS, RoutingRecorder, routing_fidelity
from romer.noise import NoiseConfig, apply_noise_
from romer.noise.config import validated
from romer.noise.roles import on_chip_tensors
from romer.progress import progress_bar

ROLE_WORDS = {"attention": "attention", "dense_mlp": "the dense MLPs", "experts": "the experts",
              "shared_experts": "the shared experts", "router": "the routers", "lm_head": "the LM head"}


def _observed(model: nn.Module, sequences: torch.Tensor, batch_size: int) -> tuple[float, RoutingRecorder, list]:
    """Perplexity, routing choices and raw router logits (per layer, every token) on the sequences."""
    if sequences.numel() > MAX_LOGIT_ROWS:
        raise RomerError(f"diagnose keeps every token's router logits, at most {MAX_LOGIT_ROWS:,} per layer; "
                         f"give --tokens {MAX_LOGIT_ROWS} or fewer (got {sequences.numel():,})")
    with RoutingRecorder(model, keep_choices=True, logit_every=1) as recorder:
        ppl = sequence_perplexity(model, sequences, batch_size)
    return ppl, recorder, [recorder.layer_logits(i) for i in range(len(recorder.layers))]


def _mean(values) -> float:
    """Mean over the seeds where the value is defined (a share of a gap needs a gap)."""
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _std(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@torch.no_grad()
def diagnose(model: nn.Module, sequences: torch.Tensor, config: NoiseConfig, seeds: list[int], batch_size: int = 8,
             progress: bool = False) -> dict:
    """The diagnosis record of `model` on chip `config` at `seeds`, from `sequences` [n, window]."""
    roles = [role for role in config.roles if on_chip_tensors(model, (role,))]
    with router_input_rms(model) as rms:
        clean_ppl, clean_routes, clean_logits = _observed(model, sequences, batch_size)
    clean_metrics = clean_routes.metrics()
    clean_cat = clean_logits
    seeds_out = []
    with progress_bar("diagnose", total=len(seeds) * (2 + len(roles)), enabled=progress) as advance:
        for seed in seeds:
            with apply_noise_(model, config, seed):
                noisy_ppl, routes, logits = _observed(model, sequences, batch_size)
                advance(1)
                with replaying_routing(model, clean_logits):
                    oracle_ppl = sequence_perplexity(model, sequences, batch_size)
                advance(1)
            role_ppl = {}
            for role in roles:
                with apply_noise_(model, validated(config.model_dump() | {"roles": (role,)}), seed):
                    role_ppl[role] = sequence_perplexity(model, sequences, batch_size)
                advance(1)
            noisy_cat = logits
            fidelity = routing_fidelity(clean_routes, routes)
            layers = [{"load_cv": m.cv, "starved": m.starved, "topk_agreement": f["topk_agreement"],
                       "systematic_share": systematic_share(c, n), "shift_size": shift_size(c, n)}
                      for m, f, c, n in zip(routes.metrics(), fidelity, clean_cat, noisy_cat)]
            gap = noisy_ppl - clean_ppl
            routing_share = (noisy_ppl - oracle_ppl) / gap if gap > 0 else float("nan")
            systematic = _mean([layer["systematic_share"] for layer in layers])
            role_gaps = {role: ppl - clean_ppl for role, ppl in role_ppl.items()}
            total = sum(max(g, 0.0) for g in role_gaps.values())
            seeds_out.append({
                "seed": seed, "noisy_ppl": noisy_ppl, "oracle_routing_ppl": oracle_ppl, "gap": gap,
                "routing_share": routing_share, "systematic_share": systematic,
                "ceiling": max(routing_share, 0.0) * systematic if gap > 0 else float("nan"),
                "role_ppl": role_ppl, "role_gap": role_gaps,
                "role_share": {r: max(g, 0.0) / total if total > 0 else float("nan") for r, g in role_gaps.items()},
                "role_sum_over_gap": sum(role_gaps.values()) / gap if gap > 0 else float("nan"),
                "layers": layers,
            })
    return summarize(model, config, roles, clean_ppl, clean_metrics, rms, seeds_out)


def summarize(model, config: NoiseConfig, roles: list[str], clean_ppl: float, clean_metrics, rms,
              seeds: list[dict]) -> dict:
    layers = []
    for index, metrics in enumerate(clean_metrics):
        per_seed = [s["layers"][index] for s in seeds]
        layers.append({
            "layer": index, "load_cv_clean": metrics.cv, "starved_clean": metrics.starved,
            "load_cv_noisy": _mean([p["load_cv"] for p in per_seed]),
            "starved_noisy": _mean([p["starved"] for p in per_seed]),
            "topk_agreement": _mean([p["topk_agreement"] for p in per_seed]),
            "systematic_share": _mean([p["systematic_share"] for p in per_seed]),
            "shift_size": _mean([p["shift_size"] for p in per_seed]),
            "router_input_outlier_ratio": outlier_ratio(rms[index]) if rms[index] is not None else float("nan"),
        })
    summary = {key: _mean([s[key] for s in seeds]) for key in ("noisy_ppl", "oracle_routing_ppl", "gap",
                                                               "routing_share", "systematic_share", "ceiling",
                                                               "role_sum_over_gap")}
    summary["ceiling_std"] = _std([s["ceiling"] for s in seeds])
    role_share = {role: _mean([s["role_share"][role] for s in seeds]) for role in roles}
    role_gap = {role: _mean([s["role_gap"][role] for s in seeds]) for role in roles}
    record = {"noise": config.model_dump(mode="json"), "seeds": [s["seed"] for s in seeds], "clean_ppl": clean_ppl,
              **summary, "role_share": role_share, "role_gap": role_gap, "layers": layers, "per_seed": seeds}
    record["verdict"] = verdict(record)
    return record


def verdict(record: dict) -> str:
    """One plain sentence: how far router calibration can go, and where the rest of the gap sits."""
    ceiling = record["ceiling"]
    if not record["gap"] > 0:
        return "This chip does not raise perplexity on these tokens: there is no gap for calibration to close."
    others = {r: s for r, s in record["role_share"].items() if r != "router"}
    rest = max(others, key=others.get) if others else None
    sentence = (f"Router calibration can recover at most about {100 * max(ceiling, 0):.0f} % of this gap "
                f"(perfect routing recovers {100 * record['routing_share']:.0f} %, and "
                f"{100 * record['systematic_share']:.0f} % of the router-logit shift is a per-expert offset)")
    if rest is not None:
        sentence += f"; the rest sits in {ROLE_WORDS.get(rest, rest)} ({100 * others[rest]:.0f} % of the gap by role)"
    return sentence + "."
