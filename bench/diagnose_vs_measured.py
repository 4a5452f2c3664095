"""Issue-13 benchmark: does `romer diagnose` predict what router calibration achieves?

    python bench/diagnose_vs_measured.py [--seeds 0-4] [--out runs/bench-readings] [--plot docs/diagnose-vs-measured.png]

For each regime: the predicted ceiling of router-side calibration (`romer diagnose` on the first
--diag-tokens calibration tokens; routing share × systematic share, mean over seeds) against the
best measured router-side recovery (the best of the four readings' `rc`, on the test slice, from
`bench/readings.py`'s campaigns, run here where missing). Prints the table and Pearson's r, and
draws the scatter plot.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from calibration_args import calibration_bench_parser, parse_bench  # noqa: E402
from readings import READINGS, regime, run_readings  # noqa: E402
from romer.campaign.inspect import diagnose  # noqa: E402
from romer.campaign.spec import parse_seeds, run_spec  # noqa: E402
from romer.noise import parse_noise_spec  # noqa: E402

REGIMES = ("cim-25c,cim-80c,gaussian,gaussian@2,cim-80c:adc_offset_sigma=1,cim-80c:adc_offset_sigma=3,"
           "cim-80c:adc_offset_sigma=6,pcm,reram,gaussian:roles=router")


def main() -> None:
    parser = calibration_bench_parser(__doc__, "runs/bench-readings", "")
    parser.add_argument("--regimes", default=REGIMES)
    parser.add_argument("--diag-tokens", type=int, default=16384)
    parser.add_argument("--plot", default="docs/diagnose-vs-measured.png")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parse_bench(parser)
    rows = []
    for text in args.regimes.split(","):
        noise, strength = regime(text)
        runs = run_readings(args, text, READINGS)
        best_reading = max(runs, key=lambda r: runs[r]["methods"]["rc"]["recovery_mean"])
        measured = runs[best_reading]["methods"]["rc"]
        diagnosis = diagnose(run_spec(), parse_noise_spec(noise).scaled(strength), parse_seeds(args.seeds),
                             args.diag_tokens, progress=False)
        row = {"regime": text, "predicted": diagnosis["ceiling"], "predicted_std": diagnosis["ceiling_std"],
               "routing_share": diagnosis["routing_share"], "systematic_share": diagnosis["systematic_share"],
               "router_role_share": diagnosis["role_share"].get("router"), "best_reading": best_reading,
               "measured": measured["recovery_mean"], "measured_std": measured["recovery_std"],
               "noisy_over_clean": runs[best_reading]["methods"]["none"]["ppl_mean"] / runs[best_reading]["clean"]["ppl"]}
        rows.append(row)
        print(f"{text:32s} noisy/clean {row['noisy_over_clean']:.2f}  predicted ceiling {100 * row['predicted']:5.1f} % "
              f"(routing {100 * row['routing_share']:.0f} % × systematic {100 * row['systematic_share']:.0f} %; "
              f"router role {100 * (row['router_role_share'] or 0):.0f} %)  measured best rc "
              f"{100 * row['measured']:+5.1f} ± {100 * row['measured_std']:.1f} % ({best_reading})", flush=True)
    predicted = np.array([r["predicted"] for r in rows])
    measured = np.array([r["measured"] for r in rows])
    r, p = stats.pearsonr(predicted, measured)
    rho, p_rho = stats.spearmanr(predicted, measured)
    router = np.array([r["router_role_share"] or 0 for r in rows])
    r_router, _ = stats.pearsonr(router, measured)
    print(f"\nPearson r = {r:.3f} (p = {p:.2g}), Spearman ρ = {rho:.3f} (p = {p_rho:.2g}) over {len(rows)} regimes; "
          f"the router's role share alone: r = {r_router:.3f}")
    figure, axis = plt.subplots(figsize=(5.2, 4.4))
    axis.errorbar(100 * predicted, 100 * measured, xerr=[100 * r["predicted_std"] for r in rows],
                  yerr=[100 * r["measured_std"] for r in rows], fmt="o", capsize=3)
    for row in rows:
        axis.annotate(row["regime"].replace("cim-80c:adc_offset_sigma=", "offsets ").replace(":roles=router", " router"),
                      (100 * row["predicted"], 100 * row["measured"]), fontsize=7, xytext=(4, 3),
                      textcoords="offset points")
    top = max(100 * predicted.max(), 100 * measured.max(), 5) * 1.15
    axis.plot([0, top], [0, top], color="#b0b0b0", linestyle="--", label="measured = predicted")
    axis.set_xlabel("predicted ceiling of router calibration, % of the gap")
    axis.set_ylabel("best measured router calibration (rc), % of the gap")
    axis.set_title(f"romer diagnose vs measured, {len(rows)} regimes: r = {r:.2f}", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"wrote {args.plot}")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
