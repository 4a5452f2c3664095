"""ROMER (Zhou, Feng et al. 2026, arXiv 2605.11800), top to bottom: two training-free steps on a model
that sits on a simulated chip.

1. Expert replacement (§2.1). Count each expert's selections per layer on calibration tokens under
   noise; an expert below τ × the uniform share is under-activated and its slot is re-programmed
   with a hot expert (`pairing`: weights, clone, or replica as in DeepSeek's EPLB).
2. Router calibration (§2.2), "percentile-based normalisation": one of the readings in router.py,
   from the router logits on calibration tokens (`router`; default `renorm`, each expert's median
   and IQR mapped onto the clean twin's, the reading that measured best).

`romer` runs them in that order, as published; `order="rc-er"` calibrates the router first and
replaces only what is still starved. Routing changes go through the family adapter's
routing-from-logits, so every family works.
"""

from __future__ import annotations

from romer.calibration.registry import Method, register_method
from romer.calibration.replacement import plan_replacements
from romer.calibration.router import equalize_map, fences, robust_map
from romer.calibration.statistics import routing_stats
from romer.calibration.step import Step, register_step


class ExpertReplacement(Step):
    """Under-activated experts (share < τ / E on the chip, at most `max_replaced` of a layer) become copies of hot ones."""

    name = "replace"
    options = ("tau", "max_replaced", "pairing")

    def enabled(self, config, chip) -> bool:
        return config.max_replaced > 0

    def reads(self, config) -> tuple[str, ...]:
        return self.options if config.max_replaced > 0 else ("max_replaced",)

    def run(self, context) -> None:
        config, calibration = context.config, context.calibration
        noisy = routing_stats(context.model, context.tokens.fit, config.batch_size)
        calibration.report["noisy_shares"] = [noisy.shares(i).tolist() for i in range(len(noisy.counts))]
        for layer in range(len(noisy.counts)):
            for replacement in plan_replacements(layer, noisy.shares(layer), config.tau, config.max_replaced,
                                                 config.pairing):
                calibration.replace(replacement)
                if config.pairing == "replica":
                    calibration.transform(layer).replicas.append((replacement.hot, replacement.cold))


class RouterCalibration(Step):
    """Each layer's router logits transformed by one reading of the percentile step (router.py)."""

    name = "router"
    options = ("router", "q_low", "q_high", "lam")

    def enabled(self, config, chip) -> bool:
        return config.router != "none"

    def reads(self, config) -> tuple[str, ...]:
        if config.router == "none":
            return ("router",)
        return self.options if config.router in ("clamp", "token") else ("router", "q_low", "q_high")  # no fences

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"routing"}) if config.router == "renorm" else frozenset()

    def run(self, context) -> None:
        config, calibration = context.config, context.calibration
        if config.router == "token":
            for layer in range(len(calibration.layers)):
                calibration.transform(layer).token = (config.q_low, config.q_high, config.lam)
            return
        noisy = routing_stats(context.model, context.tokens.fit, config.batch_size, logits=True)
        for layer, logits in enumerate(noisy.logits):
            transform = calibration.transform(layer)
            if config.router == "clamp":
                transform.low, transform.high = fences(logits, config.q_low, config.q_high, config.lam)
            else:
                (transform.noisy_median, transform.noisy_iqr, transform.target_median, transform.target_iqr) = (
                    robust_map(logits, context.clean_routing().logits[layer], config.q_low, config.q_high)
                    if config.router == "renorm" else equalize_map(logits, config.q_low, config.q_high))


def in_configured_order(steps: list[Step], config) -> list[Step]:
    """`order="rc-er"`: the router step before expert replacement; every other step keeps its place."""
    if config.order == "er-rc":
        return steps
    names = [s.name for s in steps]
    i, j = names.index("replace"), names.index("router")
    swapped = list(steps)
    swapped[i], swapped[j] = steps[j], steps[i]
    return swapped


register_step(ExpertReplacement())
register_step(RouterCalibration())
register_method(Method("er", "expert replacement only: under-activated experts become copies of hot ones",
                       steps=("replace",)))
register_method(Method("rc", "router calibration only: percentile (IQR) statistics of the router logits",
                       steps=("router",)))
register_method(Method("romer", "ROMER as published: expert replacement, then percentile router calibration",
                       steps=("replace", "router"), options=("order",), arrange=in_configured_order))
