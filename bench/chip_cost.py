"""What calibration's operations on the chip cost next to programming it: a synthetic OLMoE-shaped model with 64
experts per layer (random weights, routers spread so that τ = 0.9 finds the full 1/8 of cold experts), `cim-80c`,
one thread.

    python bench/chip_cost.py [--layers 4] [--hidden 256]

Prints the time to program the chip; to calibrate with `er` (routing statistics, then each replaced slot
programmed again) and to remove it (each slot programmed back); and a visit to the clean twin and back
(`ChipHandle.suspended()`: rc's clean statistics, retune's teacher and `--save` each make one or two), with their
ratios to programming. Only the replaced slots are programmed again (`reprogram_slot`), and the twin's visit
keeps the programmed weights in a second store instead of programming the chip again on the way back; before
either, each cost at least one programming of the chip.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import OlmoeConfig, OlmoeForCausalLM

import romer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = OlmoeConfig(vocab_size=1000, hidden_size=args.hidden, intermediate_size=args.hidden // 2,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4, num_experts=64,
                         num_experts_per_tok=8, max_position_embeddings=256, eos_token_id=0, pad_token_id=0)
    model = OlmoeForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5)
    ids = torch.randint(0, 1000, (4096,), generator=torch.Generator().manual_seed(1))
    started = time.perf_counter()
    with romer.apply_noise_(model, romer.NoiseConfig.preset("cim-80c"), seed=0) as chip:
        program = time.perf_counter() - started
        started = time.perf_counter()
        calibration = romer.calibrate_(model, romer.RomerConfig(method="er", calib_tokens=4096, window=256, tau=0.9),
                                       ids, chip=chip)
        er = time.perf_counter() - started
        replaced = len(calibration.as_dict()["replacements"])
        started = time.perf_counter()
        calibration.remove()
        remove = time.perf_counter() - started
        started = time.perf_counter()
        with chip.suspended():
            pass
        twin = time.perf_counter() - started
    slots = args.layers * 64
    print(f"OLMoE-shaped, {args.layers} layers × 64 experts, hidden {args.hidden}, cim-80c, 1 thread: "
          f"{replaced} of {slots} expert slots replaced")
    print(f"  program the chip {program:.2f} s;  er {er:.2f} s ({er / program:.2f}× programming);  "
          f"remove {remove:.2f} s ({remove / program:.2f}×);  clean twin and back {twin:.2f} s ({twin / program:.2f}×)")


if __name__ == "__main__":
    main()
