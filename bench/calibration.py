"""Issue-5 benchmark: every calibration method on romer-tiny, paired over chip seeds, per chip.

    python bench/calibration.py --out runs/bench-calibration [--seeds 0-4] [--noise cim-80c,cim-25c,gaussian]

Each chip is one resumable `romer run` campaign folder (results.json, report.md, plots); this
script prints one summary table. Test split: the first --max-tokens tokens, disjoint windows.
"""

from __future__ import annotations

import json
from pathlib import Path


from calibration_args import calibration_bench_parser, parse_bench
from romer.campaign import run_campaign, run_spec
from romer.campaign.spec import parse_seeds


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-calibration", "cim-80c,cim-25c,gaussian")
    parser.add_argument("--strengths", default="1.0")
    args = parse_bench(parser)
    for noise in args.noise.split(","):
        spec = run_spec(noise=[noise], strengths=[float(s) for s in args.strengths.split(",")],
                        seeds=parse_seeds(args.seeds), methods=["none", "er", "rc", "romer", "tuned"],
                        max_tokens=args.max_tokens, routing_tokens=4096,
                        calibration={"calib_tokens": args.calib_tokens})
        folder = Path(args.out) / noise.replace(":", "_")
        results = run_campaign(spec, folder, progress=False)
        for chip in results["chips"]:
            print(f"\n{noise} × {chip['strength']}  (clean {results['clean']['ppl']:.3f}; seeds {spec.seeds})")
            for method, m in chip["methods"].items():
                print(f"  {method:6s} ppl {m['ppl_mean']:.3f} ± {m['ppl_std']:.3f}  reduction {100 * m['reduction_mean']:+.1f} %"
                      f"  recovery {100 * m['recovery_mean']:+.1f} %  load CV {m['load_cv_mean']:.3f}"
                      f"  top-k {m['topk_agreement_mean']:.3f}  calib {m['calib_seconds_mean']:.1f} s"
                      + (f"  p(vs romer) {m['vs_romer']['t_pvalue']:.3g}" if m.get("vs_romer", {}).get("t_pvalue") else ""))
        print("  on the clean model:", json.dumps({k: round(v["change"] * 100, 2) for k, v in results["calibrated_clean"].items()}), "% change")


if __name__ == "__main__":
    main()
