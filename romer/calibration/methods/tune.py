"""Ours: the tuner, and the method `tuned` built on it.

The tuner chooses other steps' options on held-out calibration tokens, within a bounded number of
trials. Coordinate search: the replacement rule first (off, or pairing × τ), then the router
calibration (off, fence clamping at two λ, renormalisation onto the clean twin, equalisation across
the layer), then the load bias (off, on); each stage keeps the best so far. A trial applies only the
steps whose options the stages change (never the digital offload or retune's fit, which run once,
after), scores perplexity on the held-out tokens, and is undone. The evaluation split is never seen.

`tuned` = the tuner, then ROMER's two steps, the load bias and the digital offload with the chosen
options, and retune's fit as a last candidate when `retune=True`.
"""

from __future__ import annotations

from romer.calibration.registry import Method, get_method, register_method
from romer.calibration.methods.romer import in_configured_order
from romer.calibration.step import Step, register_step
from romer.evaluation.perplexity import sequence_perplexity
from romer.moe.metrics import STARVED_FRACTION_OF_UNIFORM as STARVED

STAGES: list[list[dict]] = [
    [{"max_replaced": 0.0}, {"pairing": "replica", "tau": STARVED}, {"pairing": "replica", "tau": STARVED / 2},
     {"pairing": "weights", "tau": STARVED}, {"pairing": "clone", "tau": STARVED}],
    [{"router": "none"}, {"router": "clamp", "lam": 1.5}, {"router": "clamp", "lam": 3.0}, {"router": "renorm"},
     {"router": "equalize"}],
    [{"load_bias": False}, {"load_bias": True, "bias_rate": 0.5}],
]
TUNED_FIELDS = {name for stage in STAGES for change in stage for name in change}


class Tuner(Step):
    name = "tune"
    options = ("tune",)

    def enabled(self, config, chip) -> bool:
        return config.tune

    def needs_holdout(self, config, chip) -> bool:
        return config.tune

    def reads(self, config) -> tuple[str, ...]:
        """`tune`, and every field a trial's steps may read: a stage can switch a step on (the load bias)."""
        if not config.tune:
            return self.options
        names = set(self.options)
        for stage in STAGES:
            for change in stage:
                candidate = config.model_copy(update=change)
                for step in self._tried_steps(candidate):
                    names |= set(step.reads(candidate))
        return tuple(sorted(names))

    def clean_needs(self, config, chip) -> frozenset[str]:
        """What any trial may ask of the clean twin, so that it is visited once for all of them."""
        needs: frozenset[str] = frozenset()
        for stage in STAGES:
            for change in stage:
                candidate = config.model_copy(update=change)
                for step in self._tried_steps(candidate):
                    if step.enabled(candidate, chip):
                        needs |= step.clean_needs(candidate, chip)
        return needs

    @staticmethod
    def _open_changes(stage: list[dict], explicit: frozenset[str]) -> list[dict]:
        """The stage's changes without the fields the user set (those are kept as set), each once; none when the user
        set every field the stage would choose."""
        changes: list[dict] = []
        for change in stage:
            open_change = {k: v for k, v in change.items() if k not in explicit}
            if open_change not in changes:
                changes.append(open_change)
        return [] if changes == [{}] else changes

    @staticmethod
    def _tried_steps(config) -> list[Step]:
        return [s for s in get_method(config.method).ordered_steps(config) if set(s.options) & TUNED_FIELDS]

    def run(self, context) -> None:
        holdout = context.tokens.require_holdout("tuning")
        base, chosen = context.config, {}
        trials: list[dict] = []
        for stage in STAGES:
            best = None
            for change in self._open_changes(stage, context.explicit):
                candidate = base.model_copy(update=chosen | change)  # each trial: the settings, the choices, its change
                context.config, mark = candidate, context.calibration.mark()
                try:
                    for step in self._tried_steps(candidate):
                        if step.enabled(candidate, context.chip):
                            step.run(context)
                    ppl = sequence_perplexity(context.model, holdout, candidate.batch_size)
                finally:
                    context.calibration.rollback(mark)  # the trial undone, whatever it changed
                trials.append({"change": change, "holdout_ppl": ppl})
                if best is None or ppl < best[0]:
                    best = (ppl, change)
            if best is not None:
                chosen |= best[1]
        context.config = base.model_copy(update=chosen)
        context.calibration.report["tuning"] = trials
        if context.explicit & TUNED_FIELDS:
            context.calibration.report["tuning_kept"] = sorted(context.explicit & TUNED_FIELDS)


register_step(Tuner())
register_method(Method("tuned", "ours: ROMER's steps with their options chosen on held-out calibration tokens, a "
                                "load-balancing logit bias, and the most noise-sensitive 2 % of on-chip weights in the "
                                "digital periphery (`retune=True` adds retune's fit as a last candidate)",
                       steps=("tune", "replace", "router", "load_bias", "offload", "retune-candidate"),
                       defaults={"tune": True, "digital_budget": 0.02}, options=("order",),
                       arrange=in_configured_order))
