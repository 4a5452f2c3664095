"""report.md: the tables a paper would print, from results.json."""

from __future__ import annotations


def _p(value) -> str:
    return "—" if value is None else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def _bill(bill: dict | None) -> str:
    """The per-token digital share of the on-chip matrices' MACs, energy and latency per token (relative to the
    uncalibrated chip of the same seeds, the absolute beside)."""
    if bill is None:
        return "— | — | —"
    return (f"{100 * bill['digital_mac_share_mean']:.2f} % | {bill['energy_vs_none_mean']:.3f}× "
            f"({bill['energy_nj_mean'] / 1000:.3g} µJ) | {bill['latency_vs_none_mean']:.3f}× ({bill['latency_us_mean']:.3g} µs)")


def method_table(results: dict, chip: dict | None = None) -> list[str]:
    methods = (chip or results)["methods"]
    lines = ["| method | PPL mean ± std | 95 % CI | reduction | recovery | digital share | digital MACs/token | energy/token | latency/token | load CV | top-k agr. | p vs noisy (t / Wilcoxon) | p vs romer (t) | calib. s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in methods.items():
        vs = m.get("vs_none", {})
        lines.append(
            f"| {'noisy (none)' if name == 'none' else name} | {m['ppl_mean']:.3f} ± {m['ppl_std']:.3f} | "
            f"[{m['ppl_ci95'][0]:.3f}, {m['ppl_ci95'][1]:.3f}] | {100 * m['reduction_mean']:+.1f} % | "
            f"{100 * m['recovery_mean']:+.1f} % | {100 * m.get('digital_share_mean', 0.0):.2f} % | {_bill(m.get('bill'))} | {m['load_cv_mean']:.3f} | {m['topk_agreement_mean']:.3f} | "
            f"{_p(vs.get('t_pvalue'))} / {_p(vs.get('wilcoxon_pvalue'))} | {_p(m.get('vs_romer', {}).get('t_pvalue'))} | "
            f"{m['calib_seconds_mean']:.1f} |")
    return lines


def regime_table(results: dict) -> list[str]:
    """Per value of the varied field(s): the damage and each method's recovery of the gap (mean ± std over seeds)."""
    fields = results["vary"]
    methods = [m for m in results["chips"][0]["methods"] if m != "none"]
    lines = ["| " + " | ".join(fields) + " | noisy PPL | × clean | " + " | ".join(f"{m} recovery" for m in methods) + " |",
             "|" + "---|" * (len(fields) + 2 + len(methods))]
    for chip in results["chips"]:
        ms = chip["methods"]
        lines.append("| " + " | ".join(f"{chip['values'][f]}" for f in fields)
                     + f" | {chip['noisy_ppl_mean']:.3f} | {chip['noisy_ppl_mean'] / chip['clean_ppl']:.2f} | "
                     + " | ".join(f"{100 * ms[m]['recovery_mean']:+.1f} ± {100 * ms[m]['recovery_std']:.1f} %"
                                  for m in methods) + " |")
    return lines


def _bill_section(results: dict, plots: dict) -> list[str]:
    """What the bill columns mean, and the recovery-against-cost plot when there is one."""
    bill = next((m["bill"] for m in results["methods"].values() if "bill" in m), None)
    if bill is None:
        return []
    lines = ["## What each method costs per token", "",
             f"`digital MACs/token`, `energy/token` and `latency/token` are romer.cost's bill of the routing each chip "
             f"measured on the evaluation text, at chip cost `{bill['chip_cost']}`, one token at a time (batch "
             f"{bill['batch']}), each attending {bill['context']} tokens, relative to the uncalibrated chip of the same "
             f"seed (absolute beside). `romer cost --run DIR --chip-cost PRESET --batch B` prices them otherwise; "
             "docs/chip-cost.md is the model.", ""]
    if "pareto" in plots:
        lines += [f"![recovery against cost]({plots['pareto']})", ""]
    return lines


def render(results: dict, plots: dict) -> str:
    data = results["dataset"]
    noise = results["noise"]
    lines = [
        f"# {results['model']} on `{noise['name']}`",
        "",
        f"Evaluation: `{data['name']}/{data['split']}`, {data['tokens']:,} tokens (sha256 {data['sha256'][:12]}…), "
        f"window {results['window']}, stride {results['stride']}. Calibration: `{results['calib_dataset']['name']}/"
        f"{results['calib_dataset']['split']}` (sha256 {results['calib_dataset']['sha256'][:12]}…). "
        f"Chip seeds {results['seeds']}; every comparison is paired on the same seeds.",
        "",
        f"Clean perplexity: **{results['clean']['ppl']:.3f}**. Reduction = 1 − PPL/PPL_noisy (the paper's figure); "
        "recovery = (PPL_noisy − PPL)/(PPL_noisy − PPL_clean), 100 % = noise fully undone.",
        "",
        *method_table(results),
        "",
        f"![perplexity per method]({plots['perplexity']})",
        "",
        *_bill_section(results, plots),
        "## Does calibration hurt the clean model?",
        "",
        *clean_cost_table(results["calibrated_clean"]),
        "",
    ]
    tasks = {m: v["tasks"] for m, v in results["methods"].items() if "tasks" in v}
    if tasks:
        lines += ["## Zero-shot tasks (lm-evaluation-harness, mean over seeds)", "",
                  "| method | " + " | ".join(f"{t} {k}" for t, ms in next(iter(tasks.values())).items() for k in ms
                                           if k != "sample_len") + " |"]
        first = next(iter(tasks.values()))
        lines.append("|---|" + "---|" * sum(1 for ms in first.values() for k in ms if k != "sample_len"))
        if "tasks" in results["clean"]:
            lines.append("| clean | " + " | ".join(f"{results['clean']['tasks'][t][k]:.3f}" for t, ms in first.items()
                                                    for k in ms if k != "sample_len") + " |")
        for method, scores in tasks.items():
            lines.append(f"| {'noisy (none)' if method == 'none' else method} | " + " | ".join(
                f"{scores[t][k]:.3f}" for t, ms in first.items() for k in ms if k != "sample_len") + " |")
        lines.append("")
    lines += ["## Expert load and routing", "", f"![expert load]({plots['heatmaps']})", "",
              f"![top-k agreement]({plots['topk']})", "",
              "## Per seed", "", "| method | " + " | ".join(f"seed {s}" for s in results["methods"]["none"]["seeds"]) + " |",
              "|---|" + "---|" * len(results["methods"]["none"]["seeds"])]
    for method, m in results["methods"].items():
        lines.append(f"| {method} | " + " | ".join(f"{p:.3f}" for p in m["ppl"]) + " |")
    if results["vary"]:
        lines += ["", "## Regime map", "", *regime_table(results), "", f"![regime map]({plots['regime']})", ""]
        for chip in results["chips"]:
            lines += ["", f"### {chip['noise']} × {chip['strength']:g}", "", *method_table(results, chip)]
    elif len(results["chips"]) > 1:
        lines += ["", "## Sweep", "", f"![perplexity against noise]({plots['sweep']})", ""]
        for chip in results["chips"]:
            lines += ["", f"### {chip['noise']} × {chip['strength']:g}", "", *method_table(results, chip)]
    return "\n".join(lines) + "\n"


def clean_cost_table(calibrated_clean: dict) -> list[str]:
    if not calibrated_clean:
        return ["Not measured in this run (`clean_cost: false`; `romer run` measures it by default)."]
    return ["| method applied to the clean model | PPL | change vs clean |", "|---|---|---|",
            *[f"| {m} | {v['ppl']:.3f} | {100 * v['change']:+.2f} % |" for m, v in calibrated_clean.items()]]
