"""One `retune` fit step (forward and backward through the chip, 8 sequences of 256 tokens) before and after issue 21's
two changes to it, side by side in one run, rounds alternating:

- the teacher's KL: before, `F.kl_div` on the stored float16 log-probabilities (an exp and a difference over the whole
  vocabulary every step); now `Targets.full`: the stored probabilities and Σ p log p computed once, so a step is one
  product with the chip's log-probabilities;
- the fused experts on the chip (`romer_chip`): before, rows gathered and put back by indexing, whose backward is an
  accumulating `index_put_`; now `index_select`, whose backward is `index_add_`.

    python bench/fit_step.py [--rounds 6] [--steps 3] [--threads 2]

romer-tiny on `cim-80c` chip 0 with `retune`'s corrections installed (the plan of the default budget), the norm gains
and corrections trainable as in the fit. Prints the median milliseconds per step of each combination and its ratio to
the earlier one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import romer
import romer.noise.fused_experts as fused
from romer.calibration.methods.retune import fit_loss
from romer.calibration.teacher import Targets


class EarlierTargets:
    """The teacher's targets as they were before: float16 log-probabilities, `F.kl_div` at every step."""

    def __init__(self, log_probs: torch.Tensor, hidden: tuple[torch.Tensor, ...]) -> None:
        self.log_probs, self.hidden = log_probs.to(torch.float16), hidden

    def kl(self, log_q: torch.Tensor) -> torch.Tensor:
        log_p = self.log_probs.to(log_q.device, torch.float32)
        return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


def earlier_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """`romer_chip` as it was before: gathered and put back by indexing."""
    num_top_k = top_k_index.shape[-1]
    tokens, hidden = hidden_states.shape
    expert_ids, order = torch.sort(top_k_index.reshape(-1))
    rows = hidden_states[order // num_top_k]
    offsets = torch.cumsum(torch.bincount(expert_ids, minlength=self.num_experts), dim=0, dtype=torch.int32)
    projected = fused._product(self, "gate_up_proj" if self.has_gate else "up_proj", rows, offsets, expert_ids)
    projected = self._apply_gate(projected) if self.has_gate else self.act_fn(projected)
    out = fused._product(self, "down_proj", projected, offsets, expert_ids)
    out = out * top_k_weights.reshape(-1)[order].unsqueeze(-1)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return out[inverse].view(tokens, num_top_k, hidden).sum(dim=1).to(hidden_states.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="steps per measurement")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    model, tokenizer = romer.load_model("romer-tiny")
    calib = romer.tokenize_stream(tokenizer, romer.load_corpus("stdlib", "calib").text)
    batch = calib[: 8 * 256].view(8, 256)
    with torch.no_grad():
        clean = model(input_ids=batch, output_hidden_states=True)
    log_probs = clean.logits.float().log_softmax(-1)
    hidden = tuple(h.to(torch.float16) for h in clean.hidden_states[1:])
    targets = {"earlier": EarlierTargets(log_probs, hidden), "now": Targets.full(log_probs, hidden)}
    experts = {"earlier": earlier_experts_forward, "now": fused.chip_experts_forward}
    combos = [("earlier", "earlier"), ("now", "earlier"), ("earlier", "now"), ("now", "now")]
    timings: dict[tuple[str, str], list[float]] = {combo: [] for combo in combos}
    with romer.apply_noise_(model, romer.NoiseConfig.preset("cim-80c"), seed=0) as chip:
        calibration = romer.calibrate_(model, romer.CalibrationConfig(method="retune", retune_steps=1), calib, chip=chip)
        trainable = [p for _, c in calibration.correction_items() for p in c.parameters()]
        trainable += [p for n, p in model.named_parameters() if "norm" in n]
        model.requires_grad_(False)
        for param in trainable:
            param.requires_grad_(True)
        print(f"romer-tiny on cim-80c chip 0, experts path: {chip.experts_path()}, {args.threads} threads")
        try:
            for _ in range(args.rounds + 1):  # the first round warms up and is not counted
                for kl, forward in combos:
                    ALL_EXPERTS_FUNCTIONS.register(fused.NAME, experts[forward])
                    started = time.perf_counter()
                    for _ in range(args.steps):
                        fit_loss(model, batch, targets[kl], 1.0).backward()
                    timings[(kl, forward)].append((time.perf_counter() - started) / args.steps)
        finally:
            ALL_EXPERTS_FUNCTIONS.register(fused.NAME, fused.chip_experts_forward)
        calibration.remove()
    base = statistics.median(timings[combos[0]][1:])
    for kl, forward in combos:
        median = statistics.median(timings[(kl, forward)][1:])
        print(f"  KL {kl:7s} experts {forward:7s}  {1000 * median:6.0f} ms per step  {median / base:.2f}× earlier")


if __name__ == "__main__":
    main()
