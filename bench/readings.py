"""Issue-13 benchmark: the four readings of ROMER's percentile step, paired over chip seeds, per regime.

    python bench/readings.py [--out runs/bench-readings] [--seeds 0-4] [--regimes cim-25c,cim-80c,...]

For each regime (a chip spec, optionally `@strength`) and reading (`RomerConfig.router`), one resumable
campaign folder with methods none / rc / romer (romer = expert replacement, then the reading) and the
clean-model cost. Prints, per regime and reading, the recovery of the gap (mean ± std over seeds) and
the paired t-test of each reading's per-seed perplexity against `clamp`'s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration_args import calibration_bench_parser, parse_bench
from romer.campaign import run_campaign, run_spec
from romer.campaign.spec import parse_seeds
from romer.evaluation.statistics import paired_test

READINGS = ("clamp", "renorm", "equalize", "token")
REGIMES = "cim-25c,cim-80c,gaussian,gaussian@2,cim-80c:adc_offset_sigma=3"


def regime(text: str) -> tuple[str, float]:
    noise, _, strength = text.partition("@")
    return noise, float(strength or 1.0)


def run_readings(args, text: str, readings) -> dict:
    """{reading: campaign results} of one regime (resumed from --out where done)."""
    noise, strength = regime(text)
    runs = {}
    for reading in readings:
        spec = run_spec(noise=[noise], strengths=[strength], seeds=parse_seeds(args.seeds),
                        methods=["none", "rc", "romer"], max_tokens=args.max_tokens, routing_tokens=4096,
                        calibration={"calib_tokens": args.calib_tokens, "router": reading})
        folder = Path(args.out) / f"{noise.replace(':', '_')}@{strength:g}" / reading
        runs[reading] = run_campaign(spec, folder, progress=False)
    return runs


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-readings", "")
    parser.add_argument("--regimes", default=REGIMES, help="comma list of chip[@strength]")
    parser.add_argument("--readings", default=",".join(READINGS))
    parser.add_argument("--json", dest="json_out", default=None, help="also write the table here")
    args = parse_bench(parser)
    table = []
    for text in args.regimes.split(","):
        runs = run_readings(args, text, args.readings.split(","))
        first = next(iter(runs.values()))
        print(f"\n{text}: clean {first['clean']['ppl']:.3f}, noisy {first['methods']['none']['ppl_mean']:.3f} "
              f"± {first['methods']['none']['ppl_std']:.3f} (seeds {first['methods']['none']['seeds']})")
        for reading, results in runs.items():
            row = {"regime": text, "reading": reading, "clean": results["clean"]["ppl"],
                   "noisy": results["methods"]["none"]["ppl_mean"]}
            for method in ("rc", "romer"):
                m = results["methods"][method]
                row[method] = {"ppl_mean": m["ppl_mean"], "ppl_std": m["ppl_std"], "recovery_mean": m["recovery_mean"],
                               "recovery_std": m["recovery_std"], "reduction_mean": m["reduction_mean"],
                               "clean_cost": results["calibrated_clean"][method]["change"]}
                if "clamp" in runs and reading != "clamp":
                    row[method]["vs_clamp"] = paired_test(m["ppl"], runs["clamp"]["methods"][method]["ppl"])["t_pvalue"]
            table.append(row)
            print(f"  {reading:9s}" + "".join(
                f"  {method}: {row[method]['ppl_mean']:.3f} ± {row[method]['ppl_std']:.3f}, recovery "
                f"{100 * row[method]['recovery_mean']:+.1f} ± {100 * row[method]['recovery_std']:.1f} %, clean cost "
                f"{100 * row[method]['clean_cost']:+.2f} %"
                + (f", p vs clamp {row[method]['vs_clamp']:.2g}" if row[method].get("vs_clamp") is not None else "")
                for method in ("rc", "romer")))
    print("\nmean rc recovery over regimes:", {r: round(100 * float(np.mean([t["rc"]["recovery_mean"] for t in table
                                                                            if t["reading"] == r])), 1)
                                            for r in args.readings.split(",")})
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
