"""Issue-16 benchmark: `retune` against `romer` and `tuned`, its budget and calibration-token curves, and what
transfers to another chip or another noise strength. romer-tiny, paired over chip seeds.

    python bench/retune.py --part table       # cim-25c, cim-80c, gaussian ×1, ×2: none / romer / tuned / retune
    python bench/retune.py --part budget      # cim-80c: retune_budget 0, 0.1, 0.5, 1, 2 % of the on-chip weights
    python bench/retune.py --part tokens      # cim-80c: 2,048 / 8,192 / 32,768 / 65,536 calibration tokens
    python bench/retune.py --part transfer    # cim-80c: fitted on chip s, used on chip s+1, and at 0.8× / 1.2×
    python bench/retune.py --part transfer --transfer-method retune-agnostic   # the same for the one fit over chips
    python bench/retune.py --part roles       # cim-80c with noise on one role at a time: what retune recovers of each
    python bench/retune.py --part roles --roles-noise gaussian@2 --roles-method outlier-retune   # another chip, method
    python bench/retune.py --part ablation    # cim-80c: the least-squares start and the hidden-state term, each on/off

Test split: the first --max-tokens tokens of stdlib/test, disjoint 256-token windows. Calibration:
the first --calib-tokens of stdlib/calib (a quarter held out for the fit's choices). Every part is
resumable (campaign folders under --out), except `transfer`, which refits.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from calibration_args import calibration_bench_parser, parse_bench
from romer.campaign import run_campaign, run_spec
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds
from romer.evaluation.statistics import paired_test
from romer.noise import apply_noise_, parse_noise_spec

CHIPS = ("cim-25c", "cim-80c", "gaussian", "gaussian@2")
BUDGETS = (0.0, 0.001, 0.005, 0.01, 0.02)
TOKENS = (2048, 8192, 32768, 65536)


def chip(text: str) -> tuple[str, float]:
    noise, _, strength = text.partition("@")
    return noise, float(strength or 1.0)


def campaign(args, folder: str, noise: str, strength: float, methods: list[str], **calibration) -> dict:
    spec = run_spec(noise=[noise], strengths=[strength], seeds=parse_seeds(args.seeds), methods=methods,
                    max_tokens=args.max_tokens, routing_tokens=4096,
                    calibration={"calib_tokens": args.calib_tokens}
                    | ({"holdout": args.holdout} if args.holdout is not None else {}) | calibration)
    return run_campaign(spec, Path(args.out) / folder, progress=False)


def line(name: str, m: dict, extra: str = "") -> str:
    return (f"  {name:8s} ppl {m['ppl_mean']:.3f} ± {m['ppl_std']:.3f}  reduction {100 * m['reduction_mean']:+.1f} %  "
            f"recovery {100 * m['recovery_mean']:+.1f} ± {100 * m['recovery_std']:.1f} %  "
            f"fit {m['calib_seconds_mean']:.0f} s{extra}")


def table(args) -> None:
    for text in args.noise.split(","):
        noise, strength = chip(text)
        results = campaign(args, f"table/{text.replace(':', '_')}", noise, strength, args.methods.split(","))
        m = results["methods"]
        print(f"\n{text} (clean {results['clean']['ppl']:.3f}, seeds {m['none']['seeds']}, "
              f"{args.calib_tokens} calibration tokens, holdout {args.holdout or 0.25})")
        for method, values in m.items():
            extra = ""
            if method == "retune" and {"tuned", "romer"} <= set(m):
                extra = (f"  p vs tuned {paired_test(values['ppl'], m['tuned']['ppl'])['t_pvalue']:.2g}"
                         f"  p vs romer {paired_test(values['ppl'], m['romer']['ppl'])['t_pvalue']:.2g}")
            print(line(method, values, extra))
        print("  on the clean model:", {k: f"{100 * v['change']:+.2f} %" for k, v in results["calibrated_clean"].items()})


def curve(args, part: str, values, field: str) -> None:
    rows = []
    for value in values:
        overrides = {field: value}
        results = campaign(args, f"{part}/{value}", "cim-80c", 1.0, ["none", "retune"], **overrides) \
            if field != "calib_tokens" else \
            campaign(args.__class__(**(vars(args) | {"calib_tokens": value})), f"{part}/{value}", "cim-80c", 1.0,
                     ["none", "retune"])
        m = results["methods"]["retune"]
        rows.append((value, m))
        print(line(f"{value:g}", m))
    print(f"cim-80c, {part}: " + ", ".join(f"{v:g} → {100 * m['recovery_mean']:+.1f} %" for v, m in rows))
    plot_curve(rows, part, Path(args.plot_dir) / f"retune-{part}.png")


def plot_curve(rows, part: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * v if part == "budget" else v for v, _ in rows]
    figure, axis = plt.subplots(figsize=(5, 3.6))
    axis.errorbar(x, [100 * m["recovery_mean"] for _, m in rows], yerr=[100 * m["recovery_std"] for _, m in rows],
                  marker="o", capsize=3)
    if part == "tokens":
        axis.set_xscale("log", base=2)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xlabel("digital additions, % of on-chip weights" if part == "budget" else "calibration tokens")
    axis.set_ylabel("recovery of the gap, % (± std)")
    axis.set_title(f"retune on romer-tiny, cim-80c, seeds {rows[0][1]['seeds']}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


@torch.no_grad()
def transfer(args) -> None:
    """Fit on chip s; score the same fitted calibration on chip s+1 and at 0.8× / 1.2× strength of chip s. With
    `--transfer-method retune-agnostic` the fit is the one over other chips at 1× (made once, then installed): chip s
    is as unseen as chip s+1, and 0.8× / 1.2× is the chip-agnostic fit used at another strength."""
    import romer
    from romer.calibration.persist import save_calibrated
    from romer.evaluation import perplexity

    bench = Workbench.load(run_spec(max_tokens=args.max_tokens))
    base = parse_noise_spec("cim-80c")
    ids, window = bench.ids, bench.window
    score = lambda model: perplexity(model, ids, window, window).ppl  # noqa: E731
    clean = score(bench.model)
    rows = []
    for seed in parse_seeds(args.seeds):
        with apply_noise_(bench.model, base, seed) as handle:
            started = time.perf_counter()
            with torch.enable_grad():
                calibration = romer.calibrate_(bench.model, romer.RomerConfig(method=args.transfer_method,
                                                                              calib_tokens=args.calib_tokens),
                                               bench.calib_ids, chip=handle)
            fitted_seconds = time.perf_counter() - started
            folder = Path(tempfile.mkdtemp(prefix="romer-retune-")) / "fitted"
            save_calibrated(bench.model, bench.tokenizer, calibration, folder)
            calibration.remove()
        loaded, _ = romer.load_model(str(folder))
        fitted = romer.load_calibration(loaded, folder)
        corrections = dict(fitted.corrections)
        row = {"seed": seed, "fit_s": fitted_seconds}
        for label, config, target in (("same chip", base, seed), ("next chip", base, seed + 1),
                                      ("next chip, norm gains and router biases only", base, seed + 1),
                                      ("0.8×", base.scaled(0.8), seed), ("1.2×", base.scaled(1.2), seed)):
            if "only" in label:  # the chip-specific corrections (columns, adapters) left out
                fitted.corrections.clear()
            with apply_noise_(bench.model, config, target):
                noisy = score(bench.model)
            with apply_noise_(loaded, config, target, calibration=fitted):
                tuned = score(loaded)
            fitted.corrections.update(corrections)
            row[label] = (noisy - tuned) / (noisy - clean)
        rows.append(row)
        print(f"  seed {seed}: " + ", ".join(f"{k} {100 * v:+.1f} %" for k, v in row.items() if k not in ("seed", "fit_s"))
              + f" (fit {fitted_seconds:.0f} s)")
    for label in ("same chip", "next chip", "next chip, norm gains and router biases only", "0.8×", "1.2×"):
        values = [100 * r[label] for r in rows]
        print(f"cim-80c {args.transfer_method} fitted on chip s, used on {label}: recovery {np.mean(values):+.1f} ± "
              f"{np.std(values, ddof=1) if len(values) > 1 else 0:.1f} %")


def roles(args) -> None:
    """Where the gap a fit leaves sits: the chip (`--roles-noise`, default cim-80c) with noise on attention, experts or
    routers alone, calibrated by `--roles-method` (default retune)."""
    base, strength = chip(args.roles_noise)
    method = args.roles_method
    default = (args.roles_noise, method) == ("cim-80c", "retune")
    for role in ("attention", "experts", "router"):
        noise = f"{base}:roles={role}"
        folder = f"roles/{role}" if default else f"roles/{args.roles_noise.replace('@', '_')}-{method}/{role}"
        results = campaign(args, folder, noise, strength, ["none", method])
        m = results["methods"]
        print(f"\n{noise} × {strength:g}: clean {results['clean']['ppl']:.3f}, noisy {m['none']['ppl_mean']:.3f}")
        print(line(method[:8], m[method]), " per seed " + " / ".join(f"{100 * r:+.1f}" for r in m[method]["recovery"]))


ABLATION = {"zero start, KL only (the first version)": {"retune_start": "zero", "retune_hidden_weight": 0.0},
            "least-squares start": {"retune_start": "least_squares", "retune_hidden_weight": 0.0},
            "hidden-state term": {"retune_start": "zero", "retune_hidden_weight": 1.0},
            "both (the default)": {"retune_start": "least_squares", "retune_hidden_weight": 1.0}}


def ablation(args) -> None:
    """What each part of the fit adds: the same chips and tokens, the start and the loss switched one at a time."""
    for index, (label, settings) in enumerate(ABLATION.items()):
        m = campaign(args, f"ablation/{index}", "cim-80c", 1.0, ["none", "retune"], **settings)["methods"]["retune"]
        print(line(label[:8], m), f" ← {label}, per seed " + " / ".join(f"{100 * r:+.1f}" for r in m["recovery"]))


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-retune", ",".join(CHIPS))
    parser.add_argument("--part", choices=("table", "budget", "tokens", "transfer", "roles", "ablation"), default="table")
    parser.add_argument("--holdout", type=float, default=None,
                        help="share of the calibration tokens held out (default: the config's 0.25)")
    parser.add_argument("--methods", default="none,romer,tuned,retune", help="methods of the table part")
    parser.add_argument("--roles-noise", default="cim-80c", help="the roles part's chip (preset[@strength])")
    parser.add_argument("--roles-method", default="retune", help="the roles part's calibration method")
    parser.add_argument("--transfer-method", default="retune", choices=("retune", "retune-agnostic"),
                        help="the transfer part's fit: per chip, or the one fit over other chips")
    parser.add_argument("--plot-dir", default="docs", help="where the budget and token curves are drawn")
    parser.set_defaults(calib_tokens=32768)
    args = parse_bench(parser)
    if args.part == "table":
        table(args)
    elif args.part == "budget":
        curve(args, "budget", BUDGETS, "retune_budget")
    elif args.part == "tokens":
        curve(args, "tokens", TOKENS, "calib_tokens")
    elif args.part == "roles":
        roles(args)
    elif args.part == "ablation":
        ablation(args)
    else:
        transfer(args)


if __name__ == "__main__":
    main()
