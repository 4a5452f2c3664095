"""Router-logit transforms of one MoE layer, applied in the digital periphery before routing.

In order: percentile calibration (fence clamping or robust renormalisation), the load bias, and
the replica dispatch that splits a hot expert's traffic with its copy. Each piece is optional
and a pure function of the logits (and, for the dispatch, of the token's position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IQR_FLOOR = 1e-6


def percentiles(logits: torch.Tensor, q: float) -> torch.Tensor:
    """Per-expert percentile q (0–100) of calibration logits [n, E]."""
    return torch.quantile(logits.double(), q / 100.0, dim=0).float()


def fences(logits: torch.Tensor, q_low: float, q_high: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The published form z_cal = z ± λ·IQR read as clamping to [Q_low − λ·IQR, Q_high + λ·IQR], per expert."""
    low, high = percentiles(logits, q_low), percentiles(logits, q_high)
    iqr = high - low
    return low - lam * iqr, high + lam * iqr


def robust_map(noisy: torch.Tensor, clean: torch.Tensor, q_low: float, q_high: float):
    """(noisy median, noisy IQR, clean median, clean IQR) per expert, for z → (z − m̃)/ĩ · i + m."""
    def stats(logits):
        return percentiles(logits, 50.0), (percentiles(logits, q_high) - percentiles(logits, q_low)).clamp(min=IQR_FLOOR)
    return (*stats(noisy), *stats(clean))


@dataclass
class LayerTransform:
    low: torch.Tensor | None = None          # clamp fences [E]
    high: torch.Tensor | None = None
    noisy_median: torch.Tensor | None = None  # robust renormalisation [E]
    noisy_iqr: torch.Tensor | None = None
    clean_median: torch.Tensor | None = None
    clean_iqr: torch.Tensor | None = None
    bias: torch.Tensor | None = None          # load bias [E]
    replicas: list[tuple[int, int]] = field(default_factory=list)  # (hot, copy) pairs sharing traffic

    @property
    def active(self) -> bool:
        return any(t is not None for t in (self.low, self.noisy_median, self.bias)) or bool(self.replicas)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits
        if self.low is not None:
            z = torch.maximum(torch.minimum(z, self.high.to(z)), self.low.to(z))
        if self.noisy_median is not None:
            z = (z - self.noisy_median.to(z)) / self.noisy_iqr.to(z) * self.clean_iqr.to(z) + self.clean_median.to(z)
        if self.bias is not None:
            z = z + self.bias.to(z)
        if self.replicas:
            z = dispatch_replicas(z, self.replicas)
        return z

    def as_dict(self) -> dict:
        record = {name: getattr(self, name).tolist() for name in
                  ("low", "high", "noisy_median", "noisy_iqr", "clean_median", "clean_iqr", "bias")
                  if getattr(self, name) is not None}
        return record | {"replicas": [list(pair) for pair in self.replicas]}

    @classmethod
    def from_dict(cls, record: dict) -> "LayerTransform":
        tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in record.items() if k != "replicas"}
        return cls(**tensors, replicas=[tuple(pair) for pair in record.get("replicas", [])])


def dispatch_replicas(logits: torch.Tensor, replicas: list[tuple[int, int]]) -> torch.Tensor:
    """A hot expert and its copy act as one expert with the hot expert's logit; every other token
    that picks it is sent to the copy. The copy's own (cold) router row is not used."""
    z = logits.clone()
    odd = (torch.arange(z.shape[0], device=z.device) % 2 == 1)
    blocked = torch.tensor(float("-inf"), dtype=z.dtype, device=z.device)
    for hot, copy in replicas:
        shared = logits[:, hot]
        z[:, copy] = torch.where(odd, shared, blocked)
        z[:, hot] = torch.where(odd, blocked, shared)
    return z
