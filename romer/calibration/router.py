"""Router-logit transforms of one MoE layer, applied in the digital periphery before routing.

ROMER's router step is "percentile-based normalisation", IQR = Q3 − Q1, z_cal = z_sorted ± λ·IQR.
The formula admits several readings; each is a few lines here (`RomerConfig.router`):

- `clamp`: per expert, clamp the logits to the fences [Q1 − λ·IQR, Q3 + λ·IQR] of the noisy
  calibration logits (Tukey's fences);
- `renorm`: per expert, map the noisy median and IQR onto the clean model's (the chip's software
  twin): z → (z − m̃_e)/ĩ_e · i_e + m_e;
- `equalize`: per expert, map the noisy median and IQR onto the layer's pooled median and IQR;
  needs only the noisy chip (the paper's setting), and leaves no expert systematically above or
  below the others;
- `token`: per token, across its experts: Q1, Q3 and IQR of that token's logits, logits above Q3
  raised and those below Q1 lowered by λ·IQR. Order-preserving within a token, so under softmax
  top-k routing it never changes which experts are chosen, only their weights.

In order, a layer's transform applies: the percentile reading, the load bias, and the replica
dispatch that splits a hot expert's traffic with its copy. Each piece is optional and a pure
function of the logits (and, for the dispatch, of the token's position).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IQR_FLOOR = 1e-6
READINGS = ("clamp", "renorm", "equalize", "token")


def percentiles(logits: torch.Tensor, q: float) -> torch.Tensor:
    """Per-expert percentile q (0–100) of calibration logits [n, E]."""
    return torch.quantile(logits.double(), q / 100.0, dim=0).float()


def median_iqr(logits: torch.Tensor, q_low: float, q_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-expert median and IQR (at least IQR_FLOOR) of calibration logits [n, E]."""
    iqr = percentiles(logits, q_high) - percentiles(logits, q_low)
    return percentiles(logits, 50.0), iqr.clamp(min=IQR_FLOOR)


def fences(logits: torch.Tensor, q_low: float, q_high: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`clamp`: the published form z_cal = z ± λ·IQR read as clamping to [Q_low − λ·IQR, Q_high + λ·IQR], per expert."""
    low, high = percentiles(logits, q_low), percentiles(logits, q_high)
    iqr = high - low
    return low - lam * iqr, high + lam * iqr


def robust_map(noisy: torch.Tensor, clean: torch.Tensor, q_low: float, q_high: float):
    """`renorm`: (noisy median, noisy IQR, clean median, clean IQR) per expert, for z → (z − m̃)/ĩ · i + m."""
    return (*median_iqr(noisy, q_low, q_high), *median_iqr(clean, q_low, q_high))


def equalize_map(noisy: torch.Tensor, q_low: float, q_high: float):
    """`equalize`: (noisy median, noisy IQR, pooled median, pooled IQR) per expert, the targets being the
    statistics of all the layer's calibration logits pooled over experts."""
    median, iqr = median_iqr(noisy, q_low, q_high)
    pooled_median, pooled_iqr = median_iqr(noisy.reshape(-1, 1), q_low, q_high)
    return median, iqr, pooled_median.expand_as(median).clone(), pooled_iqr.expand_as(iqr).clone()


def token_spread(logits: torch.Tensor, q_low: float, q_high: float, lam: float) -> torch.Tensor:
    """`token`: each token's logits above its own Q_high raised, below its Q_low lowered, by λ·IQR of that token."""
    q = torch.tensor([q_low / 100.0, q_high / 100.0], dtype=torch.float32, device=logits.device)
    low, high = torch.quantile(logits.float(), q, dim=-1, keepdim=True).to(logits.dtype)
    step = lam * (high - low)
    return torch.where(logits > high, logits + step, torch.where(logits < low, logits - step, logits))


@dataclass
class LayerTransform:
    low: torch.Tensor | None = None            # clamp fences [E]
    high: torch.Tensor | None = None
    noisy_median: torch.Tensor | None = None   # renorm / equalize: z → (z − noisy_median)/noisy_iqr · target_iqr + target_median
    noisy_iqr: torch.Tensor | None = None
    target_median: torch.Tensor | None = None
    target_iqr: torch.Tensor | None = None
    token: tuple[float, float, float] | None = None  # per-token reading: (q_low, q_high, λ)
    bias: torch.Tensor | None = None           # load bias [E]
    replicas: list[tuple[int, int]] = field(default_factory=list)  # (hot, copy) pairs sharing traffic

    @property
    def stored_parameters(self) -> int:
        """The digital numbers this transform keeps: its per-expert statistics, fences and bias, the per-token
        reading's three settings, two indices per replica pair."""
        tensors = (self.low, self.high, self.noisy_median, self.noisy_iqr, self.target_median, self.target_iqr,
                   self.bias)
        return (sum(t.numel() for t in tensors if t is not None) + (3 if self.token is not None else 0)
                + 2 * len(self.replicas))

    @property
    def active(self) -> bool:
        return any(t is not None for t in (self.low, self.noisy_median, self.token, self.bias)) or bool(self.replicas)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        z = logits
        if self.low is not None:
            z = torch.maximum(torch.minimum(z, self.high.to(z)), self.low.to(z))
        if self.noisy_median is not None:
            z = (z - self.noisy_median.to(z)) / self.noisy_iqr.to(z) * self.target_iqr.to(z) + self.target_median.to(z)
        if self.token is not None:
            z = token_spread(z, *self.token)
        if self.bias is not None:
            z = z + self.bias.to(z)
        if self.replicas:
            z = dispatch_replicas(z, self.replicas)
        return z

    def as_dict(self) -> dict:
        record = {name: getattr(self, name).tolist() for name in
                  ("low", "high", "noisy_median", "noisy_iqr", "target_median", "target_iqr", "bias")
                  if getattr(self, name) is not None}
        if self.token is not None:
            record["token"] = list(self.token)
        return record | {"replicas": [list(pair) for pair in self.replicas]}

    @classmethod
    def from_dict(cls, record: dict) -> "LayerTransform":
        renamed = {"clean_median": "target_median", "clean_iqr": "target_iqr"}  # records of romer ≤ 0.1
        tensors = {renamed.get(k, k): torch.tensor(v, dtype=torch.float32) for k, v in record.items()
                   if k not in ("replicas", "token")}
        token = tuple(record["token"]) if record.get("token") is not None else None
        return cls(**tensors, token=token, replicas=[tuple(pair) for pair in record.get("replicas", [])])


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
