"""What a `retune` fit costs per chip, and whether a bounded teacher changes what it recovers.

    python bench/retune_cost.py [--seeds 0-2] [--teachers full,top64] [--model romer-tiny]

romer-tiny (or `romer-tiny-64`, the 64-expert twin of bench/split_experts.py) on `cim-80c`, the default 32,768
calibration tokens: per chip seed and teacher, the fit's seconds (before the fit and the fit itself), the process's
peak resident memory over the calibration, the teacher's host bytes, and the recovery of the gap on the first
16,384 test tokens. `top64` forces the bounded teacher (each position's 64 most likely tokens; the fit switches to
it by itself above 2 GiB of full distributions), paired with `full` on the same chips.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from peak_memory import PeakMemory
from split_experts import split_experts

import romer
import romer.calibration.teacher as teacher
from romer.campaign.spec import parse_seeds
from romer.evaluation.statistics import paired_test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--teachers", default="full,top64")
    parser.add_argument("--model", default="romer-tiny", choices=("romer-tiny", "romer-tiny-64"))
    parser.add_argument("--tokens", type=int, default=16384, help="test tokens scored")
    args = parser.parse_args()

    model, tokenizer = romer.load_model("romer-tiny")
    if args.model == "romer-tiny-64":
        model = split_experts(model)
    calib = romer.tokenize_stream(tokenizer, romer.load_corpus("stdlib", "calib").text)
    test = romer.tokenize_stream(tokenizer, romer.load_corpus("stdlib", "test").text)[: args.tokens]
    window = model.config.max_position_embeddings
    score = lambda: romer.perplexity(model, test, window, window).ppl  # noqa: E731
    clean = score()
    memory = PeakMemory("cpu")
    rows: dict[str, list[dict]] = {name: [] for name in args.teachers.split(",")}
    full_bytes = teacher.MAX_TEACHER_BYTES
    for seed in parse_seeds(args.seeds):
        for name in rows:
            teacher.MAX_TEACHER_BYTES = 0 if name == "top64" else full_bytes
            with romer.apply_noise_(model, romer.NoiseConfig.preset("cim-80c"), seed=seed) as chip:
                noisy = score()
                memory.reset()
                started = time.perf_counter()
                calibration = romer.calibrate_(model, romer.CalibrationConfig(method="retune"), calib, chip=chip)
                seconds = time.perf_counter() - started
                peak = memory.peak()
                fit = calibration.report["retune"]
                ppl = score()
                calibration.remove()
            rows[name].append({"seed": seed, "recovery": (noisy - ppl) / (noisy - clean), "seconds": seconds,
                               "before_fit": fit["seconds_before_fit"], "fit": fit["fit_seconds"], "peak": peak,
                               "top_k": fit["teacher_top_k"]})
            row = rows[name][-1]
            print(f"  seed {seed} {name:6s}: recovery {100 * row['recovery']:+.1f} %, {row['seconds']:.0f} s "
                  f"({row['before_fit']:.0f} s before the fit, {row['fit']:.0f} s fitting), peak "
                  f"{row['peak'] / 2**30:.2f} GiB", flush=True)
    teacher.MAX_TEACHER_BYTES = full_bytes
    vocab = model.get_output_embeddings().weight.shape[0]
    print(f"\n{args.model} on cim-80c, 32,768 calibration tokens (24,576 fit + 8,192 held out), {len(test)} test tokens, "
          f"clean {clean:.3f}, {torch.get_num_threads()} threads; teacher bytes for the fit and held-out tokens: full "
          f"{32768 * vocab * 2 / 2**20:.0f} MiB, top64 {32768 * 64 * 6 / 2**20:.1f} MiB")
    for name, values in rows.items():
        recovery = [r["recovery"] for r in values]
        print(f"  {name:6s} recovery {100 * statistics.mean(recovery):+.1f} ± "
              f"{100 * (statistics.stdev(recovery) if len(recovery) > 1 else 0):.1f} %, "
              f"{statistics.median(r['seconds'] for r in values):.0f} s per chip (median; fit "
              f"{statistics.median(r['fit'] for r in values):.0f} s), peak {max(r['peak'] for r in values) / 2**30:.2f} GiB")
    if {"full", "top64"} <= set(rows) and len(rows["full"]) > 1:
        test_result = paired_test([r["recovery"] for r in rows["top64"]], [r["recovery"] for r in rows["full"]])
        print(f"  top64 vs full, paired t: p = {test_result['t_pvalue']:.3g}")


if __name__ == "__main__":
    main()
