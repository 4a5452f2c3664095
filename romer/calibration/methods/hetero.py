"""The field's heterogeneous analog/digital MoE: the most noise-sensitive experts run in digital units.

Chowdhury, Tsai, Burr, El Maghraoui, Liu, Wang, "Robust Heterogeneous Analog-Digital Computing for
Mixture-of-Experts Models with Theoretical Generalization Guarantees", arXiv 2603.02633 (2026); retraining-free.
As published: the experts "provably identifiable by their maximum neuron norm" are computed digitally, and the
densely activated attention layers too. Our reading of the criterion (its abstract, the body was not available to
us): an expert's score is the largest L2 norm, over its hidden neurons, of the neuron's input weights (for a
gated FFN the gate and up rows of that neuron together), on the clean weights; in each MoE layer the
`digital_experts` fraction of experts with the highest score moves to the digital periphery, and with
`digital_attention` every attention projection. No calibration text is read.

`hetero-measured` (ours) keeps the same placement and shares but ranks each layer's experts by what they measure on
this chip: the held-out perplexity given back when that expert alone runs digitally.

Digital cost: the moved weights (`Calibration.digital_share`), the same count as every other method.
"""

from __future__ import annotations

import re

import torch

from romer.calibration.registry import Method, register_method
from romer.calibration.step import Step, register_step
from romer.evaluation.perplexity import sequence_perplexity

OUTPUT_PROJECTION = re.compile(r"(down|w2|fc2|out)", re.IGNORECASE)


def expert_matrices(calibration, chip, layer, slot: int) -> list[tuple[str, int | None]]:
    """(chip name, fused slot or None) of every on-chip matrix of one expert."""
    found = []
    for module, attribute, index in calibration.adapter.expert_weights(layer, slot):
        name = chip.name_of(module, attribute)
        if name is not None:
            found.append((name, index))
    return found


def max_neuron_norm(chip, matrices: list[tuple[str, int | None]], hidden: int) -> float:
    """The expert's largest neuron norm: over its hidden neurons, the L2 norm of each neuron's input weights (the
    rows of its input projections, [k·neurons, hidden], k rows per neuron for a fused gate and up)."""
    clean = {(name, slot): chip.clean_value(name, slot).float() for name, slot in matrices}
    outputs = [w for (name, _), w in clean.items() if w.shape[0] == hidden and OUTPUT_PROJECTION.search(name)]
    outputs = outputs or [w for w in clean.values() if w.shape[0] == hidden and w.shape[1] != hidden]
    neurons = outputs[0].shape[1] if outputs else None
    squared = None
    for (name, _), w in clean.items():
        if w.shape[1] != hidden or any(w is o for o in outputs):
            continue
        rows = w.pow(2).sum(dim=1)
        if neurons is not None and rows.numel() % neurons == 0:
            rows = rows.view(-1, neurons).sum(dim=0)  # a fused gate_up: neuron j has rows j and neurons + j
        squared = rows if squared is None or squared.shape != rows.shape else squared + rows
    return float(squared.max().sqrt()) if squared is not None else 0.0


class HeterogeneousPlacement(Step):
    """Attention (optionally) and each layer's top experts, by a ranking, to the digital periphery."""

    options = ("digital_attention", "digital_experts", "digital_routers")

    def __init__(self, name: str, measured: bool) -> None:
        self.name, self.measured = name, measured

    def enabled(self, config, chip) -> bool:
        return chip is not None  # the clean model computes everything exactly already

    def needs_holdout(self, config, chip) -> bool:
        return self.measured and chip is not None

    @torch.no_grad()
    def run(self, context) -> None:
        chip, calibration, config = context.chip, context.calibration, context.config
        for name in chip.on_chip_names():
            if (config.digital_attention and chip.role(name) == "attention") or \
                    (config.digital_routers and chip.role(name) == "router"):
                calibration.make_digital(name)
        holdout = context.tokens.require_holdout("hetero-measured's ranking") if self.measured else None
        base = sequence_perplexity(context.model, holdout, context.batch_size) if self.measured else None
        chosen = {}
        for layer in calibration.layers:
            hidden = layer.router.weight.shape[-1]
            count = round(config.digital_experts * layer.num_experts)
            if count == 0:
                continue
            scores = []
            for slot in range(layer.num_experts):
                matrices = expert_matrices(calibration, chip, layer, slot)
                if self.measured:
                    scores.append(base - self._ppl_with_digital(context, matrices, holdout))
                else:
                    scores.append(max_neuron_norm(chip, matrices, hidden))
            top = sorted(range(layer.num_experts), key=lambda e: scores[e], reverse=True)[:count]
            for slot in top:
                for name, index in expert_matrices(calibration, chip, layer, slot):
                    calibration.make_digital(name, index)
            chosen[str(layer.index)] = {"experts": sorted(top), "scores": [round(s, 6) for s in scores]}
        calibration.report["hetero"] = {"ranking": "measured held-out gain" if self.measured else "max neuron norm",
                                        "attention_digital": config.digital_attention,
                                        "routers_digital": config.digital_routers,
                                        "experts_fraction": config.digital_experts, "layers": chosen,
                                        "digital_weights": calibration.digital_weights(),
                                        "digital_share": calibration.digital_share()}

    @staticmethod
    def _ppl_with_digital(context, matrices, holdout) -> float:
        calibration = context.calibration
        mark = calibration.mark()
        try:
            for name, index in matrices:
                calibration.make_digital(name, index)
            return sequence_perplexity(context.model, holdout, context.batch_size)
        finally:
            calibration.rollback(mark)


register_step(HeterogeneousPlacement("hetero", measured=False))
register_step(HeterogeneousPlacement("hetero-measured", measured=True))
# The routers digital by default: the paper moves densely activated modules to digital units, a router is one, and
# it measured better (docs/results/remedies.md: +83.6 against +68.6 % of the cim-80c gap, paired p 7e-06, +0.59 %)
register_method(Method("hetero", "the field's heterogeneous analog/digital MoE (Chowdhury et al. 2026): each "
                                 "layer's experts with the largest maximum neuron norm, attention and the routers in "
                                 "digital units", steps=("hetero",), defaults={"digital_routers": True}))
register_method(Method("hetero-measured", "ours: hetero's placement with each layer's experts ranked by the held-out "
                                          "perplexity they give back on this chip", steps=("hetero-measured",),
                       defaults={"digital_routers": True}))
