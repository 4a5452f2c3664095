"""What digital periphery buys: `tuned`'s recovery against its digital-offload budget, on romer-tiny.

    python bench/digital_budget.py [--noise cim-80c] [--budgets 0,0.01,0.02,0.05] [--seeds 0-4] [--out runs/bench-budget]

One resumable campaign folder per budget (methods none and tuned, the same test slice and
calibration tokens as bench/calibration.py); prints recovery mean ± std and the weights moved.
"""

from __future__ import annotations

from pathlib import Path


from calibration_args import calibration_bench_parser, parse_bench
from romer.campaign import run_campaign, run_spec
from romer.campaign.spec import parse_seeds


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-budget", "cim-80c")
    parser.add_argument("--budgets", default="0,0.01,0.02,0.05")
    args = parse_bench(parser)
    print(f"tuned on {args.noise}, seeds {args.seeds}: recovery of the noisy gap against the digital budget")
    for budget in (float(b) for b in args.budgets.split(",")):
        spec = run_spec(noise=[args.noise], seeds=parse_seeds(args.seeds), methods=["none", "tuned"],
                        max_tokens=args.max_tokens, routing_tokens=4096, clean_cost=False,
                        calibration={"calib_tokens": args.calib_tokens, "digital_budget": budget})
        results = run_campaign(spec, Path(args.out) / f"budget-{budget:g}", progress=False)
        best = results["chips"][0]["methods"]["tuned"]
        print(f"  budget {100 * budget:4.1f} % of on-chip weights: PPL {best['ppl_mean']:.3f} ± {best['ppl_std']:.3f}, "
              f"recovery {100 * best['recovery_mean']:+.1f} ± {100 * best['recovery_std']:.1f} %, "
              f"calibration {best['calib_seconds_mean']:.0f} s (clean {results['clean']['ppl']:.3f}, "
              f"noisy {results['chips'][0]['methods']['none']['ppl_mean']:.3f})")


if __name__ == "__main__":
    main()
