"""Forward-time cost of routing telemetry on romer-tiny, measured side by side in one run.

    python bench/telemetry_overhead.py [--tokens 16384] [--repeats 5]

Times the same forward passes with no recorder, with counts only, and with the full capture
that `romer profile --noise` uses (every token's choices, logits of every 8th token).
Repeats are interleaved and the median is reported. Goal: full capture ≤ 1.2× plain.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from romer.data import load_corpus
from romer.evaluation import tokenize_stream
from romer.models import load_model
from romer.moe import RoutingRecorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model, tokenizer = load_model("romer-tiny")
    window = model.config.max_position_embeddings
    ids = tokenize_stream(tokenizer, load_corpus("stdlib", "test").text)[: args.tokens // window * window]
    batches = ids.view(-1, window).split(8)

    @torch.no_grad()
    def run(recorder_args: dict | None) -> float:
        started = time.perf_counter()
        if recorder_args is None:
            for batch in batches:
                model(input_ids=batch)
        else:
            with RoutingRecorder(model, **recorder_args):
                for batch in batches:
                    model(input_ids=batch)
        return time.perf_counter() - started

    variants = {"plain": None, "counts": {}, "full capture": {"keep_choices": True, "logit_every": 8}}
    timings = {name: [] for name in variants}
    run(None)  # warm-up
    for _ in range(args.repeats):
        for name, recorder_args in variants.items():
            timings[name].append(run(recorder_args))
    plain = statistics.median(timings["plain"])
    print(f"romer-tiny forward over {ids.numel()} tokens, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:13s} {median:6.2f} s   {median / plain:5.3f}× plain")


if __name__ == "__main__":
    main()
