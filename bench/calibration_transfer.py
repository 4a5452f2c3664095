"""Issue-5 benchmark: a calibration fitted at one noise strength, used at ±20 % strength.

    python bench/calibration_transfer.py [--noise cim-80c] [--method tuned] [--seeds 0-4] [--out runs/bench-transfer]

For each chip seed, `--method` is fitted on the chip at strength 1.0, and the same chip (same
random streams, every spread scaled by 0.8 or 1.2: the chip after its conditions drift) is then
evaluated four ways: noisy; with the strength-1.0 calibration as it is (no re-measurement);
with the strength-1.0 tuned parameters but statistics re-measured at the new strength; and
fitted from scratch at the new strength. One line per (seed, strength) in results.jsonl: the
bench resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration_args import calibration_bench_parser, parse_bench
from romer.calibration import calibrate_, romer_config
from romer.calibration.persist import apply_record
from romer.campaign.run import Workbench
from romer.campaign.spec import run_spec
from romer.campaign.spec import parse_seeds
from romer.evaluation import perplexity
from romer.noise import apply_noise_, parse_noise_spec

WAYS = ("noisy", "transferred", "retuned_statistics", "native")


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-transfer", "cim-80c")
    parser.add_argument("--method", default="tuned")
    parser.add_argument("--strengths", default="0.8,1.2")
    args = parse_bench(parser)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
    done = {(r["seed"], r["strength"]) for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    bench = Workbench.load(run_spec(max_tokens=args.max_tokens, noise=[args.noise]))
    base = parse_noise_spec(args.noise)
    fit_config = romer_config(method=args.method, calib_tokens=args.calib_tokens)

    def ppl() -> float:
        return perplexity(bench.model, bench.ids, bench.window, bench.window, bench.batch_size).ppl

    clean = ppl()
    strengths = [float(s) for s in args.strengths.split(",")]
    for seed in parse_seeds(args.seeds):
        if all((seed, s) in done for s in strengths):
            continue
        with apply_noise_(bench.model, base, seed) as chip:
            calibration = calibrate_(bench.model, fit_config, bench.calib_ids, chip=chip)
            record, tuned = calibration.as_dict(), calibration.config
            at_fit = ppl()
            calibration.remove()
        for strength in strengths:
            if (seed, strength) in done:
                continue
            row = {"seed": seed, "strength": strength, "clean": clean, "at_fit_strength": at_fit}
            with apply_noise_(bench.model, base.scaled(strength), seed) as chip:
                row["noisy"] = ppl()
                applied = apply_record(bench.model, record, chip)
                row["transferred"] = ppl()
                applied.remove()
                again = calibrate_(bench.model, tuned.model_copy(update={"tune": False}), bench.calib_ids, chip=chip)
                row["retuned_statistics"] = ppl()
                again.remove()
                native = calibrate_(bench.model, fit_config, bench.calib_ids, chip=chip)
                row["native"] = ppl()
                native.remove()
            with open(log, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    print(f"{args.method} fitted on {args.noise} × 1.0, evaluated at other strengths "
          f"(clean {clean:.3f}; mean ± std over seeds; recovery of the noisy gap)")
    for strength in strengths:
        chosen = [r for r in rows if r["strength"] == strength]
        print(f"  strength {strength:g} ({len(chosen)} seeds)")
        for way in WAYS:
            values = np.array([r[way] for r in chosen])
            gaps = np.array([(r["noisy"] - r[way]) / (r["noisy"] - r["clean"]) for r in chosen])
            print(f"    {way:20s} ppl {values.mean():.3f} ± {values.std(ddof=1):.3f}   recovery {100 * gaps.mean():+.1f} %")


if __name__ == "__main__":
    main()
