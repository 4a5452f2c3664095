"""SPEC §7's hypothesis, measured: is the noise's shift of router logits systematic per expert
(which percentile re-centering can undo) or token-to-token jitter (which it cannot)?

    python bench/routing_shift.py [--noise cim-80c,cim-25c] [--seeds 0-4] [--tokens 8192]

On the same calibration tokens, with the clean model (the chip's software twin) and the chip:
Δ = noisy logit − clean logit per token and expert. Per layer, the systematic share is
Σ_e mean_e(Δ)² / Σ_e mean_e(Δ²): the part of the shift a per-expert offset explains. Also the
shift with the router kept digital (so Δ comes only from the hidden states the noisy attention
and experts feed it), and the router inputs' magnitude profile: the largest per-dimension RMS over
the median one (trained LLMs have outlier dimensions ≫ 10×; the hypothesis needs them).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from romer.calibration.statistics import routing_stats
from romer.campaign.run import Workbench
from romer.campaign.spec import run_spec
from romer.campaign.spec import parse_seeds
from romer.diagnosis.routing_shift import outlier_ratio, router_input_rms, shift_size, systematic_share
from romer.noise import apply_noise_, parse_noise_spec

WINDOW = 256


@torch.no_grad()
def router_input_profile(bench: Workbench, ids: torch.Tensor) -> list[float]:
    """Per layer: max over dimensions of the router input's RMS, over its median."""
    with router_input_rms(bench.model) as rms:
        for batch in ids.split(8):
            bench.model(input_ids=batch)
    return [outlier_ratio(r) for r in rms]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", default="cim-80c,cim-25c")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--tokens", type=int, default=8192)
    args = parser.parse_args()
    bench = Workbench.load(run_spec(max_tokens=WINDOW))
    ids = bench.calib_ids[: args.tokens // WINDOW * WINDOW].view(-1, WINDOW)
    clean = routing_stats(bench.model, ids, 8, logits=True).logits
    profile = router_input_profile(bench, ids)
    print(f"router inputs, max/median per-dimension RMS per layer: {', '.join(f'{p:.1f}' for p in profile)}")
    for noise in args.noise.split(","):
        base = parse_noise_spec(noise)
        for label, config in (("all on chip", base),
                              ("router digital", base.model_copy(update={"roles": tuple(r for r in base.roles
                                                                                        if r != "router")}))):
            shares, sizes = [], []
            for seed in parse_seeds(args.seeds):
                with apply_noise_(bench.model, config, seed):
                    noisy = routing_stats(bench.model, ids, 8, logits=True).logits
                shares.append([systematic_share(c, n) for c, n in zip(clean, noisy)])
                sizes.append([shift_size(c, n) for c, n in zip(clean, noisy)])
            shares, sizes = np.array(shares), np.array(sizes)
            print(f"{noise:8s} {label:15s} systematic share per layer "
                  f"{' '.join(f'{v:.3f}' for v in shares.mean(0))} (mean {shares.mean():.3f} ± {shares.std(ddof=1):.3f} "
                  f"over {len(shares)} seeds); RMS shift / clean per-expert spread {sizes.mean():.3f}")


if __name__ == "__main__":
    main()
