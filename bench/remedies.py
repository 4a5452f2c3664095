"""Every post-training remedy side by side on the same chips: the leaderboard and the Pareto plot (issue 23).

    python bench/remedies.py [--model romer-tiny] [--noise cim-80c,cim-25c] [--seeds 0-4] [--variants all]
                             [--max-tokens 16384] [--calib-tokens 32768] [--out runs/bench-remedies]
    python bench/remedies.py --report runs/bench-remedies[,runs/more-rows] [--plot docs/remedies-pareto.png]

Each variant is a registered method at stated options (VARIANTS: the published ones at their authors' settings,
ours labelled as ours). Every variant runs on the same chip seeds, the same first test tokens and, if it reads any,
the same calibration tokens; one line per (model, noise, seed, variant) in results.jsonl, so the bench resumes.
The leaderboard per (model, noise): perplexity and recovery of the noisy gap (mean ± std over seeds), the paper's
perplexity reduction (1 − PPL/noisy), the digital share of the chip's weights (`Calibration.digital_share`: moved
weights plus stored digital parameters, one count for every method), calibration tokens read, seconds per chip,
the method's perplexity on the clean model (what it costs where there is no noise), and paired t-test p-values
against `romer` and against `retune` on the common seeds.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

from romer.calibration import calibrate_, calibration_config
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds, run_spec
from romer.evaluation import perplexity
from romer.evaluation.statistics import paired_test, recovery, reduction, summarize
from romer.noise import apply_noise_, parse_noise_spec
from calibration_args import bench_parser, parse_bench
from jsonl_log import read_log, results_log

# name → (method, options, source); options beyond the method's defaults
VARIANTS: dict[str, tuple[str, dict, str]] = {
    "none": ("none", {}, "-"),
    "romer": ("romer", {}, "published (Zhou, Feng et al. 2026)"),
    "compensate-global": ("compensate-global", {}, "published (IBM aihwkit)"),
    "compensate": ("compensate", {}, "published (IBM aihwkit)"),
    "hetero": ("hetero", {}, "published (Chowdhury et al. 2026): attention, routers + 12.5 % of experts"),
    "hetero-analog-routers": ("hetero", {"digital_routers": False},
                              "the published placement with the routers left on the chip (our former default)"),
    "hetero-25": ("hetero", {"digital_experts": 0.25}, "published (Chowdhury et al. 2026, its upper share): attention, "
                                                        "routers + 25 % of experts"),
    "hetero-experts-3": ("hetero", {"digital_attention": False, "digital_routers": False, "digital_experts": 0.03125},
                         "published ranking, experts only, 3.1 % of experts"),
    "hetero-experts-12": ("hetero", {"digital_attention": False, "digital_routers": False},
                          "published ranking, experts only, 12.5 %"),
    "hetero-measured": ("hetero-measured", {}, "ours: hetero's placement, measured ranking"),
    "hetero-measured-experts-3": ("hetero-measured", {"digital_attention": False, "digital_routers": False,
                                                      "digital_experts": 0.03125},
                                  "ours: measured ranking, experts only, 3.1 %"),
    "hetero-routers": ("hetero", {"digital_routers": True},
                       "published placement with the routers digital too (densely activated modules)"),
    "hpd": ("hpd", {}, "published (Feng, Zhou et al. 2025, arXiv 2508.11935): the last layer's attention output "
                       "projection decomposed"),
    "hpd-control": ("hpd", {"hpd_whole": True}, "control: the same matrix moved whole to digital"),
    "hpd-every-1": ("hpd", {"hpd_reading": "every"}, "published (Feng, Zhou et al. 2025), second reading: each layer's "
                                                    "output projection from the last back, within 1 %"),
    "hpd-every-1-control": ("hpd", {"hpd_reading": "every", "hpd_whole": True}, "control: the same matrices whole"),
    "hpd-every-5": ("hpd", {"hpd_reading": "every", "digital_budget": 0.05},
                    "published (Feng, Zhou et al. 2025), second reading, within 5 % (every layer's)"),
    "hpd-every-5-control": ("hpd", {"hpd_reading": "every", "digital_budget": 0.05, "hpd_whole": True},
                            "control: the same matrices whole"),
    "hpd-ranked-1": ("hpd", {"hpd_reading": "ranked"}, "ours: HPD on our sensitivity ranking (routers excluded), 1 %"),
    "hpd-ranked-5": ("hpd", {"hpd_reading": "ranked", "digital_budget": 0.05}, "ours: HPD on our ranking, 5 %"),
    "retune-0.1": ("retune", {"retune_budget": 0.001}, "ours, budget 0.1 % (norm gains and router biases: 0.08 %)"),
    "retune-0.5": ("retune", {"retune_budget": 0.005}, "ours, budget 0.5 %"),
    "retune": ("retune", {}, "ours, budget 1 %"),
    "retune-2": ("retune", {"retune_budget": 0.02}, "ours, budget 2 %"),
    "retune-blockwise": ("retune", {"retune_engine": "blockwise"}, "ours, budget 1 %, fitted block by block"),
    "retune-blockwise-polish": ("retune", {"retune_engine": "blockwise", "retune_polish_steps": 50},
                                "ours, budget 1 %, block by block then 50 end-to-end steps"),
    "attention-retune": ("attention-retune", {}, "ours: attention digital, then retune at 1 % of the rest"),
    "over-chips": ("retune-agnostic", {}, "ours, after AHWA-LoRA: one fit over 4 other chips, budget 1 %"),
    "from-agnostic": ("retune-from-agnostic", {}, "ours: retune per chip, started from the over-chips fit"),
    "ahwa-lora": ("ahwa-lora", {}, "published (Li, Ferro, Lammie et al. 2024, AHWA-LoRA): LoRA r=8, α=32 on every "
                                   "layer, trained once under fresh chip draws, deployed unchanged"),
    "ahwa-lora-injection": ("ahwa-lora", {"lora_train_noise": "ahwa-injection"},
                            "published (Li, Ferro, Lammie et al. 2024) under the authors' injected noise"),
    "ahwa-lora-full": ("ahwa-lora", {"calib_tokens": 1_000_000},
                       "published (Li, Ferro, Lammie et al. 2024, AHWA-LoRA), trained on the whole calibration "
                       "split (118,089 tokens)"),
    "ahwa-lora-full-retune": ("ahwa-lora-retune", {"calib_tokens": 1_000_000},
                              "ours: ahwa-lora-full, then 50 steps of retune's fit of its adapters per chip"),
    "ahwa-lora-retune": ("ahwa-lora-retune", {}, "ours: ahwa-lora, then 50 steps of retune's fit of its adapters per chip"),
    "outliers-0.1": ("outliers", {"outlier_fraction": 0.0005}, "ours: 0.05 % largest weights per tile digital"),
    "outliers-0.2": ("outliers", {"outlier_fraction": 0.001}, "ours: 0.1 % largest weights per tile digital"),
    "outliers": ("outliers", {}, "ours: 0.25 % largest weights per tile digital"),
    "outliers-1": ("outliers", {"outlier_fraction": 0.005}, "ours: 0.5 % largest weights per tile digital"),
    "outlier-retune": ("outlier-retune", {}, "ours: outliers 0.25 %, attention's share chosen on held-out text, then "
                                             "retune at 0.5 %"),
    "outlier-retune-even": ("outlier-retune", {"outlier_attention": 1.0},
                            "ours: outliers 0.25 % at one fraction everywhere (the default before issue 31), then "
                            "retune at 0.5 %"),
    "outliers-attention": ("outliers", {"outlier_attention": None},
                           "ours: 0.25 % of the weights as outliers, attention's share chosen on held-out text"),
    "outlier-retune-attention": ("outlier-retune", {"outlier_attention": None},
                                 "ours: outliers 0.25 %, attention's share chosen on held-out text, then retune at 0.5 %"),
    "outlier-retune-blockwise": ("outlier-retune", {"retune_engine": "blockwise"},
                                 "ours: outliers 0.25 %, attention's share chosen on held-out text, then retune at "
                                 "0.5 % block by block"),
    "outlier-retune-blockwise-fast": ("outlier-retune", {"retune_engine": "blockwise", "retune_plan_tokens": 2048},
                                      "ours: outlier-retune block by block, its adapters placed on 2,048 held-out "
                                      "tokens"),
    "outlier-retune-even-blockwise": ("outlier-retune", {"outlier_attention": 1.0, "retune_engine": "blockwise"},
                                      "ours: outliers 0.25 % at one fraction everywhere, then retune at 0.5 % block "
                                      "by block"),
    "outlier-retune-2": ("outlier-retune", {"outlier_fraction": 0.005, "retune_budget": 0.01},
                         "ours: outlier-retune at twice its share (outliers 0.5 %, retune at 1 %)"),
    "outlier-retune-4": ("outlier-retune", {"outlier_fraction": 0.01, "retune_budget": 0.02},
                         "ours: outlier-retune at four times its share (outliers 1 %, retune at 2 %)"),
    "outlier-retune-0.2": ("outlier-retune", {"outlier_fraction": 0.001, "retune_budget": 0.008},
                           "ours: outliers 0.1 %, then retune at 0.8 %"),
    "outlier-retune-0.75": ("outlier-retune", {"outlier_fraction": 0.00375, "retune_budget": 0.0025},
                            "ours: outliers 0.375 %, then retune at 0.25 %"),
}
DATA_FREE = {"none", "compensate", "compensate-global", "hetero", "outliers"}  # read no calibration text


def data_free(name: str) -> bool:
    method, options, _ = VARIANTS[name]
    if options.get("outlier_attention", 1.0) is None:  # the attention factor is chosen on held-out text
        return False
    return method in DATA_FREE or (method == "hpd" and options.get("hpd_reading", "last") != "ranked")


def variant_config(name: str, calib_tokens: int):
    """The variant's config; it reads `calib_tokens` calibration tokens unless it is data-free or names its own."""
    method, options, _ = VARIANTS[name]
    return calibration_config(method=method, **(({} if data_free(name) else {"calib_tokens": calib_tokens}) | options))


def run(args) -> None:
    log = results_log(args.out)
    done = {(r["model"], r["noise"], r["seed"], r["variant"]) for r in read_log(log)}
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    bench = Workbench.load(run_spec(model=args.model, max_tokens=args.max_tokens))

    def ppl() -> float:
        return perplexity(bench.model, bench.ids, bench.window, bench.window, bench.batch_size).ppl

    def write(record: dict) -> None:
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(json.dumps({k: record[k] for k in ("model", "noise", "seed", "variant", "ppl", "seconds")
                          if k in record}), flush=True)

    if (args.model, "clean", -1, "none") not in done:
        write({"model": args.model, "noise": "clean", "seed": -1, "variant": "none", "ppl": ppl(),
               "test_tokens": int(bench.ids.numel())})
    for name in variants:  # the method on the clean model: what it costs where there is no noise
        if (args.model, "clean", -1, name) in done or name == "none":
            continue
        started = time.perf_counter()
        calibration = calibrate_(bench.model, variant_config(name, args.calib_tokens), bench.calib_ids)
        write({"model": args.model, "noise": "clean", "seed": -1, "variant": name, "ppl": ppl(),
               "seconds": time.perf_counter() - started})
        calibration.remove()
    for noise in args.noise.split(","):
        for seed in parse_seeds(args.seeds):
            pending = [v for v in variants if (args.model, noise, seed, v) not in done]
            if not pending:
                continue
            with apply_noise_(bench.model, parse_noise_spec(noise), seed) as chip:
                for name in pending:
                    started = time.perf_counter()
                    calibration, config = None, variant_config(name, args.calib_tokens)
                    if name != "none":
                        calibration = calibrate_(bench.model, config, bench.calib_ids, chip=chip)
                    seconds = time.perf_counter() - started
                    record = {"model": args.model, "noise": noise, "seed": seed, "variant": name, "ppl": ppl(),
                              "seconds": seconds, "test_tokens": int(bench.ids.numel()),
                              "calib_tokens": 0 if data_free(name) else min(config.calib_tokens,
                                                                            int(bench.calib_ids.numel())),
                              "digital_share": calibration.digital_share() if calibration else 0.0,
                              "digital_weights": calibration.digital_weights() if calibration else 0,
                              "chip_weights": chip.total_parameters}
                    if calibration is not None:
                        if "outliers" in calibration.report:  # the attention factor it was given or chose
                            record["outlier_attention"] = calibration.report["outliers"]["attention"]
                        calibration.remove()
                    write(record)


def parse_renames(specs: list[str]) -> dict[tuple[str, str], str]:
    """`FOLDER:OLD=NEW` → {(folder, old): new}: a variant whose name has since come to mean something else is read
    under the name that now means what was run (`outlier-retune` before issue 31's default is `outlier-retune-even`)."""
    renames = {}
    for spec in specs:
        folder, _, pair = spec.rpartition(":")
        old, _, new = pair.partition("=")
        if not (folder and old and new):
            raise SystemExit(f"--rename {spec!r}: write FOLDER:OLD=NEW, e.g. runs/x:outlier-retune=outlier-retune-even")
        renames[(folder, old)] = new
    return renames


def read_logs(folders: str, renames: dict[tuple[str, str], str] | None = None) -> list[dict]:
    """The records of one results folder, or of several (comma-separated) run on the same chips and tokens: a unit
    measured in more than one is taken from the first, and must have the same perplexity in each (else the folders
    were not run on the same chips, and are refused). `renames` (from `parse_renames`) re-names a folder's variants."""
    records: dict[tuple, dict] = {}
    for folder in folders.split(","):
        for record in read_log(Path(folder) / "results.jsonl"):
            record["variant"] = (renames or {}).get((folder, record["variant"]), record["variant"])
            key = (record["model"], record["noise"], record["seed"], record["variant"])
            if key in records and records[key]["ppl"] != record["ppl"]:
                raise SystemExit(f"{folder}: {key} has perplexity {record['ppl']} here and {records[key]['ppl']} in "
                                 "an earlier folder: not the same chips or tokens")
            records.setdefault(key, record)
    return list(records.values())


def p_value(a: dict, b: dict) -> float | None:
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return paired_test([a[s] for s in seeds], [b[s] for s in seeds])["t_pvalue"]


def leaderboard(records: list[dict], versus: tuple[str, ...] = ("romer", "retune")) -> dict:
    """(model, noise) → variant → its row; every row paired on the seeds it shares with `none`, and tested (paired t)
    against each variant of `versus` on the seeds they share."""
    clean = {r["model"]: r["ppl"] for r in records if r["noise"] == "clean" and r["variant"] == "none"}
    clean_cost = {(r["model"], r["variant"]): r["ppl"] for r in records if r["noise"] == "clean"}
    by = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["noise"] != "clean":
            by[(r["model"], r["noise"])][r["variant"]][r["seed"]] = r
    tables = {}
    for (model, noise), variants in by.items():
        noisy = {s: r["ppl"] for s, r in variants.get("none", {}).items()}
        rows = {}
        for name, seeds in variants.items():
            paired = sorted(set(seeds) & set(noisy))
            ppl = {s: seeds[s]["ppl"] for s in paired}
            recoveries = [recovery(ppl[s], noisy[s], clean[model]) for s in paired]
            rows[name] = {
                "seeds": paired, "ppl": summarize(list(ppl.values())), "recovery": summarize(recoveries),
                "reduction": summarize([reduction(ppl[s], noisy[s]) for s in paired]),
                "digital_share": summarize([seeds[s].get("digital_share", 0.0) for s in paired]),
                "calib_tokens": seeds[paired[0]].get("calib_tokens", 0) if paired else 0,
                "seconds": statistics.median([seeds[s].get("seconds", 0.0) for s in paired]) if paired else 0.0,
                "clean_cost": clean_cost.get((model, name), clean[model]), "ppl_by_seed": ppl}
        for row in rows.values():
            row["p_vs"] = {other: p_value(row["ppl_by_seed"], rows[other]["ppl_by_seed"]) if other in rows else None
                           for other in versus}
        tables[(model, noise)] = {"clean": clean[model], "rows": rows, "versus": versus}
    return tables


def markdown(tables: dict) -> str:
    def p(value):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"

    lines = []
    for (model, noise), table in tables.items():
        rows = table["rows"]
        seeds = rows["none"]["seeds"]
        lines += [f"**{model}, {noise}** (clean PPL {table['clean']:.3f}; chip seeds {seeds[0]}–{seeds[-1]}, "
                  f"paired; ranked by recovery)", "",
                  "| method | source | PPL | recovery of the gap | PPL reduction | digital share | calib tokens "
                  "| s / chip (median) | PPL on the clean model | " + " | ".join(f"p vs {v}" for v in table["versus"]) + " |",
                  "|---|---|---|---|---|---|---|---|---|" + "---|" * len(table["versus"])]
        order = sorted(rows, key=lambda n: -rows[n]["recovery"]["mean"] if n != "none" else math.inf)
        for name in order:
            row = rows[name]
            fewer = f" (chips {', '.join(map(str, row['seeds']))} only)" if row["seeds"] != seeds else ""
            lines.append(
                f"| {name}{fewer} | {VARIANTS.get(name, ('', {}, '?'))[2]} | {row['ppl']['mean']:.3f} ± {row['ppl']['std']:.3f} "
                f"| {100 * row['recovery']['mean']:+.1f} ± {100 * row['recovery']['std']:.1f} % "
                f"| {100 * row['reduction']['mean']:+.1f} % | {100 * row['digital_share']['mean']:.2f} % "
                f"| {row['calib_tokens']} | {row['seconds']:.1f} | {row['clean_cost']:.3f} | "
                + " | ".join(p(row["p_vs"][v]) for v in table["versus"]) + " |")
        lines.append("")
    return "\n".join(lines)


COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan", "black", "navy", "darkgoldenrod", "teal", "maroon", "lime", "crimson",
          "darkviolet", "darkslategray")  # distinct, all dark


def plot(tables: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = {"romer": ("romer", "o"), "compensate": ("compensate", "s"), "hetero-measured": ("hetero-measured", "v"),
                "hetero": ("hetero (attention + experts)", "^"), "hetero-experts": ("hetero, experts only", "<"),
                "retune": ("retune", "*"), "hpd": ("hpd (published)", "D"), "hpd-every": ("hpd, every layer", "d"),
                "hpd-ranked": ("hpd on our ranking (ours)", "p"), "control": ("HPD's control: the same matrices whole", "x"),
                "hetero-routers": ("hetero, routers digital too", ">"),
                "hetero-analog-routers": ("hetero, routers left on the chip", "v"),
                "over-chips": ("retune-agnostic (over 4 chips)", "P"), "ahwa-lora": ("ahwa-lora (published)", "8"),
                "ahwa-lora-retune": ("ahwa-lora, then retune per chip (ours)", "1"),
                "ahwa-lora-full": ("ahwa-lora (published), the whole calibration split", "8"),
                "ahwa-lora-full-retune": ("ahwa-lora, then retune per chip (ours)", "1"),
                "retune-blockwise": ("retune, block by block (ours)", "4"),
                "outlier-retune-blockwise": ("outlier-retune, block by block (ours)", "3"),
                "ahwa-lora-injection": ("ahwa-lora, the authors' injected noise", "2"),
                "attention-retune": ("attention-retune", "X"), "outliers": ("outliers (ours)", "h"),
                "outliers-attention": ("outliers, attention's share chosen on held-out text (ours)", "P"),
                "outlier-retune": ("outlier-retune (ours) at 1 / 2 / 4 %", "H"),
                "outlier-retune-even": ("outlier-retune, one outlier fraction (its former default)", "d"),
                "outlier-retune-even-blockwise": ("the same, block by block", "3")}
    panels = list(tables)
    columns = min(2, len(panels))
    grid = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(grid, columns, figsize=(10 * columns, 4.8 * grid), squeeze=False)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    for axis, key in zip(axes.flat, panels):
        rows = tables[key]["rows"]
        groups = defaultdict(list)
        for name, row in rows.items():
            if name == "none":
                continue
            family = "control" if name.endswith("-control") else name if name in families else \
                next((f for f in sorted(families, key=len, reverse=True) if name.startswith(f)), name)
            groups[family].append((100 * row["digital_share"]["mean"], 100 * row["recovery"]["mean"],
                                   100 * row["recovery"]["std"], name))
        floor = -40.0  # a point below it is drawn on the floor with its value written beside it
        for index, (family, points) in enumerate(groups.items()):
            points.sort()
            label, marker = families.get(family, (family, "x"))
            shown = [max(p[1], floor) for p in points]
            spread = len({p[0] for p in points}) > 1  # a line joins one family's budgets, never points at one share
            lines = axis.errorbar([p[0] for p in points], shown, yerr=[p[2] if p[1] > floor else 0 for p in points],
                                  marker=marker, capsize=3, label=label, linestyle="-" if spread else "none",
                                  color=COLORS[index % len(COLORS)], markersize=7)
            for (share, value, _, _), y in zip(points, shown):
                if value < floor:
                    axis.annotate(f"{value:.0f} %", (share, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                  color=lines[0].get_color())
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_xscale("symlog", linthresh=0.1)
        axis.set_xlim(0, 60)
        axis.set_ylim(floor - 5, 100)
        axis.set_xlabel("digital share of the chip's weights (%)")
        axis.set_ylabel("recovery of the noisy gap (%)")
        axis.set_title(f"{key[0]}, {key[1]} ({len(rows['none']['seeds'])} chip seeds)")
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the points, not on them
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = bench_parser(__doc__, "runs/bench-remedies")
    parser.add_argument("--model", default="romer-tiny")
    parser.add_argument("--noise", default="cim-80c,cim-25c")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--variants", default="all")
    parser.add_argument("--max-tokens", type=int, default=16384, help="test tokens (the first N of the test split)")
    parser.add_argument("--calib-tokens", type=int, default=32768, help="calibration tokens (romer's default)")
    parser.add_argument("--report", help="print the leaderboard of this results folder, or of several run on the same "
                                         "chips and tokens (comma-separated; no run)")
    parser.add_argument("--plot", help="with --report: write the Pareto plot here")
    parser.add_argument("--versus", default="romer,retune", help="with --report: the variants every row is tested "
                                                                   "against (paired t), comma-separated")
    parser.add_argument("--rename", action="append", default=[], metavar="FOLDER:OLD=NEW",
                        help="with --report: read variant OLD of FOLDER as NEW (a name whose meaning has changed since "
                             "it was run); repeatable")
    args = parse_bench(parser)
    if args.report:
        tables = leaderboard(read_logs(args.report, parse_renames(args.rename)), tuple(args.versus.split(",")))
        text = markdown(tables)
        (Path(args.report.split(",")[0]) / "leaderboard.md").write_text(text)
        print(text)
        if args.plot:
            plot(tables, Path(args.plot))
        return
    run(args)


if __name__ == "__main__":
    main()
