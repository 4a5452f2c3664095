"""`romer age`'s report.md, results.json and aging.png, written atomically from a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from romer.atomic import write_text_atomic
from romer.diagnosis.monitor import ALARM_FRACTION, SIGMAS
from romer.noise import Condition
from romer.report.age_plots import plot_age

if TYPE_CHECKING:
    from romer.campaign.age_spec import AgeSpec


def write_age_report(spec: AgeSpec, summary: dict, out: Path) -> dict:
    write_text_atomic(out / "results.json", json.dumps(summary, indent=1) + "\n")
    write_text_atomic(out / "report.md", age_markdown(spec, summary))
    plot_age(spec, summary, out / "aging.png")
    return summary | {"paths": {"results": str(out / "results.json"), "report": str(out / "report.md"),
                                "plot": str(out / "aging.png")}}


def _cell(entry: dict | None) -> str:
    if not entry or not entry.get("recovery"):
        return "–"
    r = entry["recovery"]
    return f"{r['mean']:+.1f} ± {r['std']:.1f} %"


def age_markdown(spec: AgeSpec, summary: dict) -> str:
    seeds = ", ".join(map(str, spec.seeds))
    lines = [f"# {spec.model} on `{spec.noise}`, calibrated at {spec.calibrate_at}, read later",
             "",
             f"Chip seeds {seeds}; evaluation: the first {spec.max_tokens} tokens of {spec.data}'s test split; "
             f"calibration: {spec.calib_data or spec.data + ' calib split'}. Clean PPL "
             f"{summary['clean_ppl']:.3f}." if summary["clean_ppl"] is not None else "",
             "",
             "Recovery of the gap at each condition (against `none` at that condition, same chip seed), mean ± std "
             "over seeds: **aged** (calibrated once, read unchanged) / *recalibrated* (fitted afresh there)"
             + (f" / refreshed ({spec.refresh_steps} steps from the values it carries; its cost in % of the "
                "calibration's own seconds)" if spec.refresh_steps else "") + ".", ""]
    for temperature in spec.temperatures:
        conditions = [c for c in summary["conditions"] if Condition.parse(c).temperature_c == temperature]
        if not conditions:
            continue
        lines += [f"## {temperature:g} °C", "", "| method | " + " | ".join(conditions) + " |",
                  "|---|" + "---|" * len(conditions)]
        for method in spec.methods:
            cells = []
            for condition in conditions:
                row = next(r for r in summary["rows"] if r["method"] == method and r["condition"] == condition)
                ppl = row.get("aged", {}).get("ppl")
                text = f"**{_cell(row.get('aged'))}**" if method != "none" else (
                    f"PPL {ppl['mean']:.3f}" if ppl else "–")
                if method != "none" and spec.reference and condition != spec.calibrate_at:
                    text += f" / *{_cell(row.get('recalibrated'))}*"
                if spec.refreshes(method, condition) and row.get("refreshed"):
                    cost = row["refreshed"].get("cost_percent_of_fit")
                    text += f" / {_cell(row['refreshed'])}" + (f" ({cost['mean']:.0f} %)" if cost else "")
                cells.append(text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Monitor", "",
              "Drift score from live traffic only (expert load, router-logit medians and IQRs, per-column output "
              "statistics) against the statistics stored at calibration; ρ: Spearman's rank correlation with the true "
              "perplexity loss since calibration; alarms at the calibration condition are false alarms, alarms at "
              f"a later one recommend a recalibration (score above {ALARM_FRACTION:g} × the chip's distance from "
              f"the clean model at calibration, and above the unchanged chip's floor by {SIGMAS:g} spreads). The "
              f"monitor reads {'a stored probe of held-out calibration text' if spec.monitor == 'probe' else 'live traffic'}"
              f" of {spec.monitor_tokens} tokens per check.", "",
              "| method | ρ | readings | false alarms | alarms at later readings | conditions that raised one |",
              "|---|---|---|---|---|---|"]
    for method, record in summary["monitor"].items():
        rho = "–" if record["spearman_rho"] is None else f"{record['spearman_rho']:.3f}"
        lines.append(f"| {method} | {rho} | {record['readings']} | {record['false_alarms']} of "
                     f"{record['unchanged_readings']} | {record['alarms']} of "
                     f"{record['readings'] - record['unchanged_readings']} | "
                     f"{', '.join(record['alarm_conditions']) or '–'} |")
    def rho(value) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines += ["", f"By outcome (the recalibrated reference): an alarm is false where recalibrating would lower perplexity "
              f"by less than {100 * spec.alarm_tolerance:g} %, a miss is no alarm where it would lower it by more. "
              "ρ within one temperature (over times and seeds) beside log t alone, and within one time (over "
              "temperatures and seeds) beside the temperature alone, on the readings after calibration: the monitor "
              "has to beat a clock and a thermometer.", "",
              "| method | false alarms / misses (judged) | ρ within each temperature: monitor / log t | ρ within each "
              "time: monitor / temperature |", "|---|---|---|---|"]
    for method, record in summary["monitor"].items():
        temperatures = ", ".join(f"{k} {rho(v['monitor'])} / {rho(v['log_time'])}"
                                 for k, v in record.get("rho_within_temperature", {}).items())
        times = ", ".join(f"{k} {rho(v['monitor'])} / {rho(v['temperature'])}"
                          for k, v in record.get("rho_within_time", {}).items())
        lines.append(f"| {method} | {record.get('false_alarms_by_outcome', '–')} / {record.get('misses_by_outcome', '–')}"
                     f" ({record.get('judged_readings', 0)}) | {temperatures or '–'} | {times or '–'} |")
    return "\n".join(lines) + "\n"
