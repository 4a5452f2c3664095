"""Cost of simulating the chip, on romer-tiny, measured side by side in one run.

    python bench/noise_overhead.py [--tokens 16384] [--repeats 3]

Prints the evaluation time of the clean model, of the `weights`-mode chip (noise applied once
to the stored weights) and of the `analog`-mode chip (tile-level DAC/ADC simulation on every
forward), their ratios to clean, and the one-off programming cost scaled to 10 M parameters.
Repeats are interleaved (clean, weights, analog, clean, ...) and the median is reported, so
drift in machine load hits all three alike. Goals: weights ≤ 1.05×, analog ≤ 3×, programming
< 1 s per 10 M parameters.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from romer.data import load_corpus
from romer.evaluation import perplexity, tokenize_stream
from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="cim-80c")
    args = parser.parse_args()

    model, tokenizer = load_model("romer-tiny")
    ids = tokenize_stream(tokenizer, load_corpus("stdlib", "test").text)[: args.tokens]
    window = model.config.max_position_embeddings

    def timed_eval() -> float:
        started = time.perf_counter()
        perplexity(model, ids, window, window // 2)
        return time.perf_counter() - started

    timings: dict[str, list[float]] = {"clean": [], "weights": [], "analog": []}
    programming: list[float] = []
    on_chip = 0
    for _ in range(args.repeats):
        timings["clean"].append(timed_eval())
        for mode in ("weights", "analog"):
            started = time.perf_counter()
            handle = apply_noise_(model, NoiseConfig.preset(args.preset, mode=mode), seed=0)
            if mode == "weights":
                programming.append(time.perf_counter() - started)
                on_chip = sum(handle.size(name) for name in handle.names())
            timings[mode].append(timed_eval())
            handle.restore()

    clean = statistics.median(timings["clean"])
    print(f"romer-tiny, {args.tokens} tokens, window {window}, preset {args.preset}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    for mode, values in timings.items():
        median = statistics.median(values)
        print(f"  {mode:8s} {median:7.2f} s   {median / clean:5.2f}× clean")
    cost = statistics.median(programming)
    print(f"  programming {cost:.2f} s for {on_chip / 1e6:.2f} M on-chip parameters "
          f"= {cost * 10e6 / on_chip:.2f} s per 10 M parameters")


if __name__ == "__main__":
    main()
