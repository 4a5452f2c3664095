"""Issue-13 benchmark: when does expert replacement help? Paired over chip seeds.

    python bench/split_experts.py --out runs/romer-tiny-64      # the 64-expert, top-8 twin of romer-tiny
    python bench/replacement.py [--out runs/bench-replacement] [--seeds 0-4]

Models: romer-tiny (32 experts, top-4) and romer-tiny-64 (64 experts, top-8, the same function).
Chips: cim-80c, and cim-80c with untrimmed ADC offsets (σ = 6 LSB) that starve experts outright.
Variants: `er` alone (τ = 0.5, at most 1/8 of a layer), `rc` alone (the default reading, renorm),
`romer` as published (replace, then calibrate the router), and `romer` with the order reversed
(calibrate the router first, then replace only the experts still under-activated).
"""

from __future__ import annotations

from pathlib import Path

from calibration_args import calibration_bench_parser, parse_bench
from romer.campaign import run_campaign, run_spec
from romer.campaign.spec import parse_seeds
from romer.evaluation.statistics import paired_test

MODELS = {"romer-tiny": "romer-tiny", "romer-tiny-64": "runs/romer-tiny-64"}
CHIPS = ("cim-80c", "cim-80c:adc_offset_sigma=6")


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-replacement", ",".join(CHIPS))
    args = parse_bench(parser)
    for label, model in MODELS.items():
        if not Path(model).exists() and model != "romer-tiny":
            raise SystemExit(f"{model} is missing: run python bench/split_experts.py --out {model} first")
        for noise in args.noise.split(","):
            runs = {}
            for order in ("er-rc", "rc-er"):
                spec = run_spec(model=model, noise=[noise], seeds=parse_seeds(args.seeds),
                                methods=["none", "er", "rc", "romer"] if order == "er-rc" else ["none", "romer"],
                                max_tokens=args.max_tokens, routing_tokens=4096,
                                calibration={"calib_tokens": args.calib_tokens, "order": order})
                folder = Path(args.out) / label / noise.replace(":", "_") / order
                runs[order] = run_campaign(spec, folder, progress=False)
            published = runs["er-rc"]["methods"]
            reversed_romer = runs["rc-er"]["methods"]["romer"]
            print(f"\n{label} on {noise}: clean {runs['er-rc']['clean']['ppl']:.3f}, noisy "
                  f"{published['none']['ppl_mean']:.3f} ± {published['none']['ppl_std']:.3f}; starved experts per "
                  f"layer: noisy {', '.join(f'{v:.1f}' for v in published['none']['starved'])}, after rc "
                  f"{', '.join(f'{v:.1f}' for v in published['rc']['starved'])}")
            rows = [("er", published["er"]), ("rc", published["rc"]), ("romer (er → rc)", published["romer"]),
                    ("romer (rc → er)", reversed_romer)]
            for name, m in rows:
                vs_rc = paired_test(m["ppl"], published["rc"]["ppl"])["t_pvalue"] if name != "rc" else None
                print(f"  {name:16s} ppl {m['ppl_mean']:.3f} ± {m['ppl_std']:.3f}  recovery "
                      f"{100 * m['recovery_mean']:+.1f} ± {100 * m['recovery_std']:.1f} %"
                      + (f"  p vs rc {vs_rc:.2g}" if vs_rc is not None else ""))


if __name__ == "__main__":
    main()
