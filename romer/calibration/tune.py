"""Choose ROMER's free parameters on held-out calibration tokens, within a bounded number of trials.

Coordinate search: the replacement rule first (off, or pairing × τ), then the router calibration
(off, fence clamping at two λ, renormalisation onto the clean twin, equalisation across the layer),
then the load bias (off, on); each stage
keeps the best so far. Every trial calibrates on the fit tokens, scores perplexity on the held-out
tokens, and is undone. The evaluation split is never seen.
"""

from __future__ import annotations

from romer.calibration.config import RomerConfig, romer_config
from romer.calibration.methods import get_method
from romer.calibration.statistics import sequence_perplexity
from romer.calibration.tokens import CalibrationTokens
from romer.noise.chip import ChipHandle

STAGES: list[list[dict]] = [
    [{"max_replaced": 0.0}, {"pairing": "replica", "tau": 0.5}, {"pairing": "replica", "tau": 0.25},
     {"pairing": "weights", "tau": 0.5}, {"pairing": "clone", "tau": 0.5}],
    [{"router": "none"}, {"router": "clamp", "lam": 1.5}, {"router": "clamp", "lam": 3.0}, {"router": "renorm"},
     {"router": "equalize"}],
    [{"load_bias": False}, {"load_bias": True, "bias_rate": 0.5}],
]


def tune(model, config: RomerConfig, tokens: CalibrationTokens, chip: ChipHandle | None) -> tuple[RomerConfig, list[dict]]:
    from romer.calibration.romer import run_steps

    holdout = tokens.require_holdout("tuning")
    method = get_method(config.method)
    chosen = config.model_dump() | {"tune": False, "digital_budget": 0.0}
    trials: list[dict] = []
    for stage in STAGES:
        best = None
        for change in stage:
            candidate = romer_config(**(chosen | change))
            calibration = run_steps(model, candidate, method, tokens, chip)
            try:
                ppl = sequence_perplexity(model, holdout, config.batch_size)
            finally:
                calibration.remove()
            trials.append({"change": change, "holdout_ppl": ppl})
            if best is None or ppl < best[0]:
                best = (ppl, change)
        chosen |= best[1]
    chosen |= {"digital_budget": config.digital_budget}
    return romer_config(**chosen), trials
