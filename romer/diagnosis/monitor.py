"""A monitor a deployed chip can run: has the chip moved since it was calibrated?

It reads only what the chip itself sees on live, unlabeled traffic (no labels, no clean twin):
- each MoE layer's expert load (selection counts);
- each router's logit medians and inter-quartile ranges, per expert;
- each decoder layer's output, per column (hidden unit): its mean and its root mean square.

`snapshot` takes these statistics; `reference` takes them at calibration on two successive windows of live
traffic. `drift_score` compares a later snapshot (on later traffic, as many tokens) with the reference and
returns one number, the mean over layers of three parts:
- load: total-variation distance between the two load distributions;
- logits: the median |Δ median| over experts, in units of the reference IQR, plus |log(IQR ratio)|;
- columns: the median over columns of |Δ mean| / reference RMS plus |log(RMS ratio)|.

Each part is 0 for an unchanged chip read on unlimited traffic. On finite traffic it is not: the score between
the reference's two windows, the same chip on different text of the same size, is what an unchanged chip scores
(`floor`), and a recommendation to recalibrate is raised when a later score exceeds `ALARM × floor`: a ratio, so
the same rule serves a model of any size. How well the score tracks the true loss, and how often it alarms on an
unchanged chip, is measured by `romer age` (Spearman's ρ and the false alarms in its report).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from romer.calibration.blocks import decoder_layers, layer_output
from romer.evaluation.routing import capture_routing

ALARM = 3.0  # recalibrate when the drift score exceeds this multiple of an unchanged chip's score (the floor)


@dataclass
class Snapshot:
    """A chip's statistics on some traffic, per MoE layer (load, logit medians, IQRs) and decoder layer (columns)."""

    load: list[torch.Tensor]
    logit_median: list[torch.Tensor]
    logit_iqr: list[torch.Tensor]
    column_mean: list[torch.Tensor]
    column_rms: list[torch.Tensor]
    tokens: int
    floor: float | None = None  # a reference's: the score of the same chip on a second window of traffic

    def as_dict(self) -> dict:
        return {"load": [t.tolist() for t in self.load], "logit_median": [t.tolist() for t in self.logit_median],
                "logit_iqr": [t.tolist() for t in self.logit_iqr], "column_mean": [t.tolist() for t in self.column_mean],
                "column_rms": [t.tolist() for t in self.column_rms], "tokens": self.tokens, "floor": self.floor}

    @classmethod
    def from_dict(cls, record: dict) -> "Snapshot":
        tensors = {k: [torch.tensor(v) for v in record[k]] for k in
                   ("load", "logit_median", "logit_iqr", "column_mean", "column_rms")}
        return cls(**tensors, tokens=record["tokens"], floor=record.get("floor"))


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


def reference(model: nn.Module, first: torch.Tensor, second: torch.Tensor, window: int, batch_size: int = 8) -> Snapshot:
    """The statistics a monitor stores at calibration: a snapshot on the traffic window `first`, with the score of
    the same chip on the next window `second` (as many tokens) as its floor."""
    stored = snapshot(model, first, window, batch_size)
    stored.floor = drift_score(stored, snapshot(model, second, window, batch_size))["score"]
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
        record["recalibrate"] = score > ALARM * reference.floor
    return record
