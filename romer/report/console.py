"""The tables the command line prints, built from the JSON records its commands return (`--json` prints
those records as they are)."""

from __future__ import annotations

from rich.table import Table


def _pairs(title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    return table


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


def eval_table(record: dict) -> Table:
    data = record["dataset"]
    table = _pairs("Perplexity")
    table.add_row("model", f"{record['model']} ({record['model_path']})")
    table.add_row("data", f"{data['name']}/{data['split']}: {data['tokens']:,} tokens, sha256 {data['sha256'][:12]}…")
    table.add_row("window / stride", f"{record['window']} / {record['stride']}")
    table.add_row("perplexity (clean)", f"{record['ppl']:.3f}")
    if "noisy" in record:
        per_seed = ", ".join(f"{n['ppl']:.3f}" for n in record["noisy"])
        table.add_row(f"perplexity ({record['noise']['name']})",
                      f"{record['noisy_ppl_mean']:.3f} ± {record['noisy_ppl_std']:.3f} (seeds {record['seeds']}: {per_seed})")
    return table


FULL_TABLE_COLUMNS = 180  # below this terminal width the campaign table keeps the columns that matter


def bill_cells(bill: dict | None) -> dict[str, str]:
    """energy/token and latency/token cells: relative to the uncalibrated chip of the same seeds (report.md has the
    absolute figures beside)."""
    if bill is None:
        return {"energy/token": "—", "latency/token": "—"}
    return {"energy/token": f"{bill['energy_vs_none_mean']:.3f}×", "latency/token": f"{bill['latency_vs_none_mean']:.3f}×"}


def campaign_table(results: dict, width: int | None = None) -> Table:
    """The campaign's methods, one row each. A terminal narrower than FULL_TABLE_COLUMNS (an 80-column one) gets
    method, PPL ± std, recovery, digital share and p vs noisy; report.md always has every column."""
    compact = width is not None and width < FULL_TABLE_COLUMNS
    data = results["dataset"]
    title = (f"{results['model']} on {results['noise']['name']} (× {results['strength']:g}), {data['name']}/"
             f"{data['split']} {data['tokens']:,} tokens, seeds {results['methods']['none']['seeds']}: clean PPL "
             f"{results['clean']['ppl']:.3f}")
    table = Table(title=title, caption="every column: report.md" if compact else None)
    columns = (("method", "PPL mean ± std", "recovery", "digital", "p vs noisy") if compact else
               ("method", "PPL mean ± std", "95 % CI", "reduction", "recovery", "digital", "energy/token",
                "latency/token", "load CV", "top-k agr.", "p vs noisy", "clean-model cost"))
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    for method, m in results["methods"].items():
        cost = results["calibrated_clean"].get(method)
        p = m.get("vs_none", {}).get("t_pvalue")
        cells = {"method": "noisy (none)" if method == "none" else method,
                 "PPL mean ± std": f"{m['ppl_mean']:.3f} ± {m['ppl_std']:.3f}",
                 "95 % CI": f"[{m['ppl_ci95'][0]:.2f}, {m['ppl_ci95'][1]:.2f}]",
                 "reduction": f"{100 * m['reduction_mean']:+.1f} %", "recovery": f"{100 * m['recovery_mean']:+.1f} %",
                 "digital": f"{100 * m.get('digital_share_mean', 0.0):.1f} %",
                 **bill_cells(m.get("bill")),
                 "load CV": f"{m['load_cv_mean']:.3f}", "top-k agr.": f"{m['topk_agreement_mean']:.3f}",
                 "p vs noisy": "—" if p is None else f"{p:.3g}",
                 "clean-model cost": "—" if cost is None else f"{100 * cost['change']:+.2f} %"}
        table.add_row(*(cells[column] for column in columns))
    return table


def profile_table(record: dict) -> Table:
    dataset = record["dataset"]
    noisy = "noisy_layers" in record
    table = Table(title=f"Routing profile: {record['model']} on {dataset['name']}/{dataset['split']} "
                        f"({dataset['tokens']:,} tokens)")
    columns = ["layer", "CV clean", "starved clean", "entropy clean"]
    if noisy:
        columns += [f"CV {record['noise']['name']}", "starved noisy", "top-k agreement", "Jaccard", "KL"]
    for column in columns:
        table.add_column(column, justify="right")
    for index, layer in enumerate(record["layers"]):
        row = [str(index), f"{layer['cv']:.3f}", str(layer["starved"]), f"{layer['entropy']:.3f}"]
        if noisy:
            noisy_layer = record["noisy_layers"][index]
            kl = record["kl"][index]
            row += [f"{noisy_layer['cv']:.3f}", str(noisy_layer["starved"]), f"{record['topk_agreement'][index]:.3f}",
                    f"{record['jaccard'][index]:.3f}", "—" if kl is None else f"{kl:.4f}"]
        table.add_row(*row)
    return table


DIAGNOSE_LEGEND = ("load CV and starved experts: clean → noisy; systematic: share of the router-logit shift that is a "
                   "per-expert offset; shift: its RMS over the clean logits' spread; input outliers: largest over "
                   "median per-dimension RMS of the router input")


def diagnose_tables(record: dict) -> tuple[Table, Table]:
    layers = Table(title=f"{record['model']} on {record['noise']['name']}, seeds {record['seeds']}: "
                         f"{record['tokens']:,} calibration tokens")
    for column in ("layer", "load CV", "starved", "top-k agr.", "systematic", "shift", "input outliers"):
        layers.add_column(column, justify="right")
    for layer in record["layers"]:
        layers.add_row(str(layer["layer"]), f"{layer['load_cv_clean']:.3f} → {layer['load_cv_noisy']:.3f}",
                       f"{layer['starved_clean']} → {layer['starved_noisy']:.1f}", f"{layer['topk_agreement']:.3f}",
                       f"{layer['systematic_share']:.3f}", f"{layer['shift_size']:.3f}",
                       f"{layer['router_input_outlier_ratio']:.1f}×")
    gaps = Table(title=f"perplexity gap: clean {record['clean_ppl']:.3f} → noisy {record['noisy_ppl']:.3f}; "
                       f"with perfect routing {record['oracle_routing_ppl']:.3f}")
    for column in ("noise on", "gap (PPL)", "share of the role gaps"):
        gaps.add_column(column, justify="right")
    for role, gap in record["role_gap"].items():
        gaps.add_row(f"{role} only", f"{gap:+.3f}", f"{100 * record['role_share'][role]:.0f} %")
    gaps.add_row("whole chip", f"{record['gap']:+.3f}", f"(role gaps sum to {100 * record['role_sum_over_gap']:.0f} %)")
    return layers, gaps


def calibrate_table(record: dict) -> Table:
    method = record["method"]
    table = _pairs(f"{record['model']} on {record['noise']} seed {record['seed']}, method {method}")
    for key, label in (("clean_ppl", "perplexity clean"), ("noisy_ppl", "perplexity noisy"),
                       ("calibrated_ppl", f"perplexity {method}")):
        if key in record:
            table.add_row(label, f"{record[key]:.3f}")
    cal = record["calibration"]
    table.add_row("replacements", ", ".join(f"L{r['layer']}: {r['hot']}→{r['cold']}" for r in cal["replacements"])
                  or "none")
    table.add_row("router transforms", f"{len(cal['router'])} layers")
    digital = cal["digital"]
    table.add_row("digital tensors", (", ".join(digital) if len(digital) <= 6 else
                                      f"{len(digital)} tensors and expert slots (the record lists them)") or "none")
    if cal.get("decomposed"):
        table.add_row("decomposed (HPD)", ", ".join(cal["decomposed"]))
    if cal.get("digital_share") is not None:
        table.add_row("digital share", f"{100 * cal['digital_share']:.2f} % of the chip's weights")
    if cal.get("corrections") or cal.get("norms"):
        table.add_row("re-tuned digital periphery", f"{len(cal['corrections'])} tensors corrected, "
                                                    f"{len(cal['norms'])} norm gains")
    table.add_row("calibration time", f"{record['calibration_seconds']:.1f} s")
    return table


def estimate_table(record: dict) -> Table:
    parameters = record["parameters"]
    count = f"{parameters / 1e9:.2f} B" if parameters >= 1e9 else f"{parameters / 1e6:.1f} M"
    table = Table(title=f"{record['model']}: {count} parameters, {record['dtype']}, window {record['window']}")
    table.add_column("what")
    table.add_column("memory", justify="right")
    table.add_row("weights", _gib(record["weights_bytes"]))
    table.add_row("programming scratch (largest on-chip slot)", _gib(record["programming_bytes"]))
    table.add_row("routing telemetry (bounded sample)", _gib(record["telemetry_bytes"]))
    table.add_row(f"activations and logits, {record['batch_size']} × {record['window']} tokens",
                  _gib(record["batch_size"] * record["per_sequence_bytes"]))
    table.add_row("[bold]peak on the device", f"[bold]{_gib(record['peak_bytes'])}")
    table.add_row(f"retune fit, {record['retune_batch_size']} × {record['window']} tokens per step, with gradient "
                  "checkpointing (without)",
                  f"{_gib(record['retune_peak_bytes'])} ({_gib(record['retune_peak_bytes_unchecked'])})")
    table.add_row("retune teacher on the host (32,768 calibration tokens)", _gib(record["retune_host_bytes"]))
    if "blockwise_retune_peak_bytes" in record:
        table.add_row(f"block-wise retune fit, {record['retune_batch_size']} × {record['window']} tokens per step "
                      "(on the host: teacher, clean layer outputs, cached inputs)",
                      f"{_gib(record['blockwise_retune_peak_bytes'])} ({_gib(record['blockwise_retune_host_bytes'])})")
    table.add_row(f"clean copy for restore() ({record['backup']})", _gib(record["backup_bytes"]))
    return table


def estimate_times(record: dict) -> Table | None:
    """The time per stage of one chip's block-wise `outlier-retune`, where rates were measured for the device."""
    if "stage_seconds" not in record:
        return None
    load, rates = record["workload"], record["rates"]
    table = Table(title=f"one chip's outlier-retune (block-wise), priced at rates measured on {rates['machine']} "
                        f"(layers {rates['fitted_on_layers']}, commit {rates['commit']}): {load['eval_tokens']:,} "
                        f"test tokens, {load['calib_tokens']:,} calibration tokens, {load['plan_tokens']:,} plan "
                        f"tokens, {load['block_steps']} steps of {load['step_tokens']:,} tokens per block")
    table.add_column("stage")
    table.add_column("time", justify="right")
    for stage, seconds in record["stage_seconds"].items():
        table.add_row(stage, f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s")
    total = sum(record["stage_seconds"].values())
    table.add_row("[bold]in all", f"[bold]{total / 60:.1f} min")
    return table


def estimate_verdict(record: dict) -> str:
    verdict = "fits" if record["fits"] else "does NOT fit"
    return (f"{verdict} in {_gib(record['available_bytes'])}; largest batch that fits: {record['fitted_batch_size']} "
            "(use --batch-size auto in romer run)")


def preset_lines() -> list[str]:
    """Each preset: its summary, the fields it sets, and where its numbers come from."""
    from romer.noise import NoiseConfig, get_preset, preset_names

    defaults = NoiseConfig()
    lines = []
    for name in preset_names():
        preset = get_preset(name)
        changed = {k: v for k, v in preset.config.model_dump().items() if k != "name" and v != getattr(defaults, k)}
        lines += [f"[bold]{name}[/]: {preset.summary}",
                  f"  sets: {', '.join(f'{k}={v}' for k, v in changed.items()) or '(defaults)'}",
                  f"  sources: {preset.sources}"]
    return lines


def noise_fields_table() -> Table:
    from romer.noise import NoiseConfig

    defaults = NoiseConfig()
    table = Table(title="Noise fields (override with --noise NAME:field=value,...)")
    for column in ("field", "default", "meaning"):
        table.add_column(column)
    for field, info in NoiseConfig.model_fields.items():
        table.add_row(field, str(getattr(defaults, field)), info.description or "")
    return table


def chip_cost_table(cost, names: list[str]) -> Table:
    """One chip-cost preset's values, each with its source; the caption lists the presets."""
    table = Table(title=f"chip cost {cost.name}: {cost.technology} (TOPS/W of a full tile: {cost.tops_per_watt():.2f})",
                  caption=f"presets: {', '.join(names)}")
    for column in ("field", "value", "source"):
        table.add_column(column, overflow="fold")
    for field, value, source in cost.table():
        table.add_row(field, value, source)
    return table


def _bill_rows(table: Table, bill: dict) -> None:
    table.add_row("energy per token", f"{bill['energy_nj'] / 1000:.4g} µJ", f"{bill['all_digital_nj'] / 1000:.4g} µJ")
    table.add_row("  analog MVMs", f"{bill['analog_nj'] / 1000:.4g} µJ", "—")
    table.add_row("  digital arithmetic", f"{bill['digital_nj'] / 1000:.4g} µJ", "")
    table.add_row("  digital reads", f"{bill['reads_nj'] / 1000:.4g} µJ", "")
    table.add_row("  activations moved", f"{bill['moves_nj'] / 1000:.4g} µJ", "")
    table.add_row("latency per token", f"{bill['latency_us']:.4g} µs", f"{bill['all_digital_latency_us']:.4g} µs")
    table.add_row("digital share of the on-chip MACs", f"{100 * bill['digital_mac_share']:.2f} %", "100 %")


def shape_bill_table(record: dict) -> Table:
    table = Table(title=f"{record['model']} on {record['chip_cost']}: per token, batch {record['batch']}, context "
                        f"{record['context']} (every expert equally loaded; {record['on_chip_parameters'] / 1e9:.2f} B "
                        "on-chip weights)")
    for column, justify in (("", "left"), ("analog chip", "right"), ("all digital, same node", "right")):
        table.add_column(column, justify=justify)
    _bill_rows(table, record["bill"])
    return table


def run_bill_table(record: dict) -> Table:
    table = Table(title=f"{record['run']} on {record['chip_cost']}: per token, batch {record['batch']}, context "
                        f"{record['context']} (the routing each chip measured; paired with the uncalibrated chip)")
    for column in ("method", "chips", "energy/token", "vs none", "latency/token", "vs none", "vs balanced",
                   "digital MACs/token"):
        table.add_column(column, justify="right")
    for method, m in record["methods"].items():
        table.add_row(method, str(m["chips"]), f"{m['energy_nj'] / 1000:.4g} µJ", f"{m['energy_vs_none']:.3f}×",
                      f"{m['latency_us']:.4g} µs", f"{m['latency_vs_none']:.3f}×", f"{m['latency_vs_balanced']:.3f}×",
                      f"{100 * m['digital_mac_share']:.2f} %")
    return table
