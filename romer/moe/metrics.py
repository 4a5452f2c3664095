"""Expert-load metrics of one MoE layer (SPEC §4), from per-expert selection counts."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

STARVED_FRACTION_OF_UNIFORM = 0.5  # "starved": below half the uniform share (SPEC §4); also expert replacement's τ


@dataclass(frozen=True)
class LoadMetrics:
    """How evenly one layer spreads its top-k selections over its experts.

    frequency: each expert's share of all selections (sums to 1); cv: coefficient of
    variation of the shares (0 = perfectly balanced); entropy: Shannon entropy normalised by
    log(E) (1 = balanced); gini: Gini coefficient (0 = balanced); min_share / max_share: the
    extremes relative to the uniform share 1/E; starved: experts below half the uniform share.
    """

    frequency: list[float]
    cv: float
    entropy: float
    gini: float
    min_share: float
    max_share: float
    starved: int

    def as_dict(self) -> dict:
        return asdict(self)


def load_metrics(counts: torch.Tensor) -> LoadMetrics:
    counts = counts.double()
    experts = counts.numel()
    frequency = counts / counts.sum()
    uniform = 1.0 / experts
    positive = frequency[frequency > 0]
    entropy = float(-(positive * positive.log()).sum() / math.log(experts))
    ordered = frequency.sort().values
    ranks = torch.arange(1, experts + 1, dtype=torch.float64)
    gini = float(((2 * ranks - experts - 1) * ordered).sum() / experts)
    return LoadMetrics(
        frequency=frequency.tolist(),
        cv=float(frequency.std(unbiased=False) / frequency.mean()),
        entropy=entropy,
        gini=gini,
        min_share=float(frequency.min() / uniform),
        max_share=float(frequency.max() / uniform),
        starved=int((frequency < STARVED_FRACTION_OF_UNIFORM * uniform).sum()),
    )
