"""A monitor a deployed chip can run: has the chip moved since it was calibrated, and far enough to recalibrate?

It reads only what the chip itself computes on unlabeled text (no labels, no clean twin at run time):
- each MoE layer's expert load (selection counts);
- each router's logit medians and inter-quartile ranges, per expert;
- each decoder layer's output, per column (hidden unit): its mean and its root mean square.

`snapshot` takes these statistics on some tokens; `drift_score` compares a later snapshot with the one stored at
calibration and returns one number, the mean over layers of three parts:
- load: total-variation distance between the two load distributions;
- logits: the median |Δ median| over experts, in units of the reference IQR, plus |log(IQR ratio)|;
- columns: the median over columns of |Δ mean| / reference RMS plus |log(RMS ratio)|.

**What it reads: a stored probe.** `reference(model, probe, …)` stores the statistics of a fixed probe, some
thousand tokens of calibration text kept on the host; each check replays the same probe (one forward pass). The
score then moves only with the chip: the same text read by the same chip scores 0 (more only where reads are noisy,
which the replays at calibration measure). This is how the field watches a deployed array: aihwkit's global drift
compensation replays one fixed reference input and compares its output with the one read at programming. Live
traffic (`reference(…, others=[windows])`, each check on a new window) is kept for comparison: its statistics move
with what the text is about at least as much as with the chip (bench/monitor.py measures both).

**When to recalibrate.** At calibration the clean model is at hand (every calibration reads it), so the reference also
stores `damage`: the score of the clean model against the chip as calibrated, on the same probe: how far from clean
the calibration left it, in the score's own units. A later score is a recommendation to recalibrate when it exceeds
`ALARM_FRACTION × damage` (the chip has since moved half as far again as it stood from clean) and the replays'
floor by `SIGMAS` spreads (more than reading noise moves it). How well the score tracks the true loss, how often it
alarms on an unchanged chip and where it fires are measured by `romer age` and bench/monitor.py.
"""

from __future__ import annotations

import statistics
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from romer.calibration.blocks import decoder_layers, layer_output
from romer.evaluation.routing import capture_routing

FLOOR_WINDOWS = 6       # unchanged-chip scores taken at calibration (replays of the probe, or live windows)
SIGMAS = 4.0            # an alarm needs a score this many spreads above that floor: with six scores an unchanged chip's
                        # next one does so about 1 % of the time (Student's t, 5 degrees of freedom, ×√(1 + 1/6))
ALARM_FRACTION = 0.5    # ... and above this fraction of the chip's distance from its clean twin at calibration


@dataclass
class Snapshot:
    """A chip's statistics on some traffic, per MoE layer (load, logit medians, IQRs) and decoder layer (columns)."""

    load: list[torch.Tensor]
    logit_median: list[torch.Tensor]
    logit_iqr: list[torch.Tensor]
    column_mean: list[torch.Tensor]
    column_rms: list[torch.Tensor]
    tokens: int
    floor: float | None = None   # a reference's: the mean score of the unchanged chip (probe replays, or windows)
    spread: float | None = None  # ... and their standard deviation (with two or more)
    damage: float | None = None  # a reference's: the clean twin's score against the chip as calibrated

    def as_dict(self) -> dict:
        return {"load": [t.tolist() for t in self.load], "logit_median": [t.tolist() for t in self.logit_median],
                "logit_iqr": [t.tolist() for t in self.logit_iqr], "column_mean": [t.tolist() for t in self.column_mean],
                "column_rms": [t.tolist() for t in self.column_rms], "tokens": self.tokens, "floor": self.floor,
                "spread": self.spread, "damage": self.damage}

    @classmethod
    def from_dict(cls, record: dict) -> "Snapshot":
        tensors = {k: [torch.tensor(v) for v in record[k]] for k in
                   ("load", "logit_median", "logit_iqr", "column_mean", "column_rms")}
        return cls(**tensors, tokens=record["tokens"], floor=record.get("floor"), spread=record.get("spread"),
                   damage=record.get("damage"))

    def threshold(self) -> float | None:
        """The score above which the chip is recommended for recalibration: above `ALARM_FRACTION × damage` and above
        the floor by `SIGMAS` spreads, each where known (None when neither is)."""
        parts = [self.floor + SIGMAS * self.spread] if self.floor is not None and self.spread is not None else []
        parts += [ALARM_FRACTION * self.damage] if self.damage is not None else []
        return max(parts) if parts else None


@torch.no_grad()
def snapshot(model: nn.Module, ids: torch.Tensor, window: int, batch_size: int = 8) -> Snapshot:
    """The chip's statistics on the token stream `ids` (what it serves)."""
    sums: list[torch.Tensor] = []
    squares: list[torch.Tensor] = []
    counted = [0]
    layers = decoder_layers(model)

    def hook(index):
        def record(module, args, output):
            hidden = layer_output(output).detach().float().reshape(-1, layer_output(output).shape[-1]).cpu()
            if len(sums) <= index:
                sums.append(torch.zeros(hidden.shape[-1], dtype=torch.float64))
                squares.append(torch.zeros(hidden.shape[-1], dtype=torch.float64))
            sums[index] += hidden.double().sum(0)
            squares[index] += hidden.double().pow(2).sum(0)
            if index == 0:
                counted[0] += hidden.shape[0]
        return record

    with ExitStack() as stack:
        for index, (_, layer) in enumerate(layers):
            stack.callback(layer.register_forward_hook(hook(index)).remove)
        routed = capture_routing(model, ids, window, batch_size, logit_every=1)
    logits = [routed.layer_logits(i) for i in range(len(routed.layers))]
    quartiles = [torch.quantile(l, torch.tensor([0.25, 0.5, 0.75]), dim=0) if l.numel() else torch.zeros(3, 0)
                 for l in logits]
    tokens = counted[0]
    return Snapshot(load=[c.double() / c.sum().clamp(min=1) for c in routed.counts],
                    logit_median=[q[1] for q in quartiles], logit_iqr=[q[2] - q[0] for q in quartiles],
                    column_mean=[s / max(tokens, 1) for s in sums],
                    column_rms=[(q / max(tokens, 1)).sqrt() for q in squares], tokens=tokens)


def reference(model: nn.Module, probe: torch.Tensor, window: int, batch_size: int = 8, clean: Snapshot | None = None,
              others: list[torch.Tensor] | None = None, replays: int = FLOOR_WINDOWS) -> Snapshot:
    """The statistics a monitor stores at calibration: a snapshot of the chip on the token stream `probe`; its floor
    and spread from `replays` further reads of the same probe (or, for a live-traffic monitor, from the windows
    `others`, as many tokens each); with `clean` (the clean model's snapshot on the same probe, taken once in the lab),
    its `damage`: the clean model's score against it."""
    stored = snapshot(model, probe, window, batch_size)
    windows = others if others is not None else [probe] * replays
    scores = []
    for ids in windows:
        scores.append(drift_score(stored, snapshot(model, ids, window, batch_size))["score"])
        if others is None and scores == [0.0]:  # the chip reads the probe bit for bit: no reading noise to measure
            scores = [0.0, 0.0]
            break
    if not scores:
        raise ValueError("a monitor's reference needs at least one further read for its floor")
    stored.floor = statistics.fmean(scores)
    stored.spread = statistics.stdev(scores) if len(scores) > 1 else None
    if clean is not None:
        stored.damage = drift_score(stored, clean)["score"]
    return stored


def drift_score(reference: Snapshot, now: Snapshot) -> dict:
    """One drift score of `now` against `reference` (see the module's text), its parts, and the recommendation."""
    eps = 1e-12
    load = torch.stack([0.5 * (a - b).abs().sum() for a, b in zip(reference.load, now.load)]).mean()
    logit = torch.stack([((m1 - m0).abs() / i0.clamp(min=eps)).median() + (i1.clamp(min=eps) / i0.clamp(min=eps))
                         .log().abs().median() for m0, i0, m1, i1 in
                         zip(reference.logit_median, reference.logit_iqr, now.logit_median, now.logit_iqr)]).mean()
    column = torch.stack([((m1 - m0).abs() / r0.clamp(min=eps)).median() + (r1.clamp(min=eps) / r0.clamp(min=eps))
                          .log().abs().median() for m0, r0, m1, r1 in
                          zip(reference.column_mean, reference.column_rms, now.column_mean, now.column_rms)]).mean()
    score = float(load + logit + column)
    record = {"score": score, "load": float(load), "logits": float(logit), "columns": float(column)}
    if reference.floor is not None:
        record["floor"] = reference.floor
        record["ratio"] = score / reference.floor if reference.floor > 0 else None
    threshold = reference.threshold()
    if threshold is not None:
        record["threshold"] = threshold
        record["sigmas"] = ((score - reference.floor) / reference.spread
                            if reference.spread and reference.floor is not None else None)
        record["damage"] = reference.damage
        record["recalibrate"] = score > threshold
    return record
