"""romer beside IBM aihwkit-lightning 2.1.0 on the same model, in one process: coverage, speed, memory.

    python bench/peer.py [--tokens 8192] [--rounds 3] [--models romer-tiny,romer-tiny-64]

For each model (romer-tiny, and its 64-expert, top-8 twin from `bench/split_experts.py`):
- coverage: the share of the decoder layers' weights (attention, experts, routers, shared experts; norms excluded)
  that each simulator puts on the chip, and the tensors the peer leaves digital;
- conversion / programming time (`convert_to_analog` on a second copy of the model, in place, the LM head left
  digital as romer leaves it; `apply_noise_`);
- evaluation time of the same token batches (disjoint windows) and peak resident memory, in alternating rounds
  (median): clean; the peer in eval mode (8-bit DAC and ADC, dynamic ranges, 256-row slices, output bound 8 per
  channel) and noisy (the same plus output noise 0.04 and per-channel weight noise 0.03, its analog layers in
  train mode, the only mode in which it draws them); romer `cim-80c` in weights and analog mode; romer with the
  peer's noisy config carried over by the bridge (`NoiseConfig.from_aihwkit_lightning`), analog mode, on every
  on-chip weight and on attention only (the peer's coverage).
Goal: romer's analog mode no slower than the peer's noisy forward while covering every on-chip weight it skips.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peak_memory import PeakMemory
from split_experts import split_experts

from romer.data import load_corpus
from romer.evaluation import perplexity, tokenize_stream
from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_


def peer_configs():
    from aihwkit_lightning.simulator.configs import (TorchInferenceRPUConfig, WeightClipType,
                                                     WeightNoiseInjectionType)

    def base():
        config = TorchInferenceRPUConfig()
        config.forward.inp_res = config.forward.out_res = 2 ** 8 - 2
        config.forward.out_bound = 8.0
        config.clip.type = WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL
        config.mapping.max_input_size = 256
        config.pre_post.input_range.enable = config.pre_post.input_range.dynamic = True
        return config

    noisy = base()
    noisy.forward.out_noise, noisy.forward.out_noise_per_channel = 0.04, True
    noisy.modifier.noise_type, noisy.modifier.std_dev = WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL, 0.03
    return base(), noisy


def layer_weights(model) -> dict[str, int]:
    """Weights of the decoder layers (2-D and fused 3-D tensors; norms excluded), by parameter name."""
    return {name: p.numel() for name, p in model.named_parameters() if ".layers." in name and p.dim() >= 2}


def peer_on_chip(model) -> dict[str, int]:
    from aihwkit_lightning.nn import AnalogLinear

    return {f"{prefix}.weight": module.weight.numel() for prefix, module in model.named_modules()
            if isinstance(module, AnalogLinear) and ".layers." in f"{prefix}."}


def load(name: str):
    model, tokenizer = load_model("romer-tiny")
    return (split_experts(model) if name == "romer-tiny-64" else model), tokenizer


def measure(name: str, tokens: int, rounds: int) -> None:
    from aihwkit_lightning.nn import AnalogLinear
    from aihwkit_lightning.nn.conversion import convert_to_analog

    model, tokenizer = load(name)
    peer_model, _ = load(name)
    ids = tokenize_stream(tokenizer, load_corpus("stdlib", "test").text)[:tokens]
    window = model.config.max_position_embeddings
    eval_config, noisy_config = peer_configs()
    started = time.perf_counter()
    convert_to_analog(peer_model, eval_config, inplace=True, exclude_modules=["lm_head"])  # digital in romer too
    converted = time.perf_counter() - started
    analog_layers = [m for m in peer_model.modules() if isinstance(m, AnalogLinear)]

    weights = layer_weights(model)
    total = sum(weights.values())
    peer = peer_on_chip(peer_model)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        mine = {name: chip.size(name) for name in chip.names()}
    skipped = sorted({n.split(".layers.")[1].split(".", 1)[1] for n in weights if n not in peer})
    print(f"\n{name}: {total / 1e6:.2f} M weights in the decoder layers, {ids.numel()} tokens, window {window}, "
          f"{torch.get_num_threads()} threads, median of {rounds} alternating rounds")
    print(f"  coverage: aihwkit-lightning {100 * sum(peer.values()) / total:.1f} % ({len(peer)} tensors), "
          f"romer {100 * sum(mine.values()) / total:.1f} % ({len(mine)} tensors)")
    print(f"  the peer leaves digital, in every layer: {', '.join(skipped)}")

    bridged = NoiseConfig.from_aihwkit_lightning(noisy_config)
    memory = PeakMemory("cpu")

    def peer_mode(config, train: bool):
        def run():
            for layer in analog_layers:
                layer.rpu_config = config
                layer.train(train)
            try:
                return perplexity(peer_model, ids, window, window).ppl
            finally:
                for layer in analog_layers:
                    layer.eval()
        return run

    def romer_mode(config):
        def run():
            started = time.perf_counter()
            with apply_noise_(model, config, seed=0):
                programming.setdefault(config.name + config.mode, []).append(time.perf_counter() - started)
                return perplexity(model, ids, window, window).ppl
        return run

    programming: dict[str, list[float]] = {}
    variants = {
        "clean": lambda: perplexity(model, ids, window, window).ppl,
        "aihwkit-lightning eval (8-bit in/out)": peer_mode(eval_config, False),
        "aihwkit-lightning noisy (train-mode noise)": peer_mode(noisy_config, True),
        "romer cim-80c, weights mode": romer_mode(NoiseConfig.preset("cim-80c")),
        "romer cim-80c, analog mode": romer_mode(NoiseConfig.preset("cim-80c", mode="analog")),
        "romer, the peer's noisy config (bridge)": romer_mode(bridged),
        "romer, the same, attention only (the peer's coverage)": romer_mode(
            bridged.model_copy(update={"roles": ("attention",), "name": "attention-only"})),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, list[int]] = {k: [] for k in variants}
    ppl: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(rounds):
            for label, run in variants.items():
                memory.reset()
                started = time.perf_counter()
                ppl[label] = run()
                seconds[label].append(time.perf_counter() - started)
                peaks[label].append(memory.peak())
    clean = statistics.median(seconds["clean"])
    print(f"  {'':54s} {'eval s':>8s} {'× clean':>8s} {'peak GiB':>9s} {'PPL':>8s}")
    for label in variants:
        median = statistics.median(seconds[label])
        print(f"  {label:54s} {median:8.2f} {median / clean:8.2f} {max(peaks[label]) / 2**30:9.2f} {ppl[label]:8.3f}")
    print(f"  conversion: aihwkit-lightning convert_to_analog {converted:.2f} s; romer programming (cim-80c, weights) "
          f"{statistics.median(programming['cim-80cweights']):.2f} s, the bridged chip "
          f"{statistics.median(programming['aihwkit-lightninganalog']):.2f} s")
    peer_noisy = statistics.median(seconds["aihwkit-lightning noisy (train-mode noise)"])
    same_coverage = statistics.median(seconds["romer, the same, attention only (the peer's coverage)"])
    for label in ("romer cim-80c, analog mode", "romer, the peer's noisy config (bridge)"):
        ratio = statistics.median(seconds[label]) / peer_noisy
        print(f"  goal: {label} ≤ the peer's noisy forward, covering every on-chip weight it skips: "
              f"{'met' if ratio <= 1 else 'NOT met'} ({ratio:.2f}×)")
    print(f"  at the peer's coverage (attention only, its physics): romer {same_coverage / peer_noisy:.2f}× the peer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="romer-tiny,romer-tiny-64")
    args = parser.parse_args()
    for name in args.models.split(","):
        measure(name, args.tokens, args.rounds)


if __name__ == "__main__":
    main()
