"""Ours: `attention-retune`, the two remedies that measure best composed. hetero's attention placement (every
attention projection in digital units, no expert moved: `digital_experts` = 0 by default), then `retune`'s fit of
the digital periphery of what stays on the chip, within `retune_budget` of those weights. Attention carries the
largest share of the noisy gap and of what `retune` leaves (docs/results/retune.md, "Where the gap retune leaves sits");
this method buys it back with digital units and lets the fit do the rest.
"""

from romer.calibration.registry import Method, register_method

register_method(Method("attention-retune", "ours: attention in digital units (hetero's placement, no expert), then "
                                           "retune's fit of what stays on the chip",
                       steps=("hetero", "retune"), defaults={"digital_experts": 0.0}))
