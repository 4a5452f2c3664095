"""The summary of a `romer age` campaign from its records: per (method, condition) perplexity and recovery of that
condition's gap, aged, recalibrated and refreshed, paired with `none` on the same chip; and the monitor judged by
outcome and against a clock and a thermometer."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import TYPE_CHECKING

from romer.noise import Condition

if TYPE_CHECKING:
    from romer.campaign.age_spec import AgeSpec


def degrees(value: float) -> str:
    return f"{value:g}"


def _spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if math.isnan(rho) else float(rho)


def summarize_age(spec: AgeSpec, records: list[dict]) -> dict:
    """Per (method, condition): perplexity and recovery of that condition's gap, aged and recalibrated (mean ± std
    over seeds, paired with `none` on the same chip); the monitor's Spearman ρ against the true loss and its alarms."""
    clean = next((r["ppl"] for r in records if r["kind"] == "clean"), None)
    found = {(r["kind"], r["seed"], r["method"], r["condition"]): r for r in records if r["kind"] != "clean"}
    rows = []
    for method, condition in itertools.product(spec.methods, spec.conditions()):
        row = {"method": method, "condition": condition}
        for kind in ("aged", "recalibrated", "refreshed"):
            ppls, recoveries, costs = [], [], []
            for seed in spec.seeds:
                unit = found.get((kind, seed, method, condition)) or (
                    found.get(("aged", seed, method, condition)) if condition == spec.calibrate_at else None)
                noisy = found.get(("aged", seed, "none", condition))
                if unit is None or noisy is None or unit.get("ppl") is None:
                    continue
                if "refresh_share_of_fit" in unit:
                    costs.append(100 * unit["refresh_share_of_fit"])
                ppls.append(unit["ppl"])
                gap = noisy["ppl"] - clean if clean is not None else None
                if gap and gap > 0:
                    recoveries.append(100 * (noisy["ppl"] - unit["ppl"]) / gap)
            if ppls:
                row[kind] = {"ppl": _mean_std(ppls), "recovery": _mean_std(recoveries) if recoveries else None,
                             "seeds": len(ppls)} | ({"cost_percent_of_fit": _mean_std(costs)} if costs else {})
        rows.append(row)
    monitor = {}
    for method in spec.methods:
        scores, losses, alarms, unchanged, fired = [], [], 0, 0, 0
        for seed in spec.seeds:
            base = found.get(("aged", seed, method, spec.calibrate_at))
            for condition in spec.conditions():
                unit = found.get(("aged", seed, method, condition))
                if unit is None or base is None or "monitor" not in unit:
                    continue
                scores.append(unit["monitor"]["score"])
                losses.append(unit["ppl"] - base["ppl"])
                if condition == spec.calibrate_at:
                    unchanged += 1
                    alarms += bool(unit["monitor"].get("recalibrate"))
                else:
                    fired += bool(unit["monitor"].get("recalibrate"))
        monitor[method] = {"spearman_rho": _spearman(scores, losses), "readings": len(scores),
                           "false_alarms": alarms, "unchanged_readings": unchanged, "alarms": fired,
                           **_monitor_outcomes(spec, found, method),
                           "alarm_conditions": sorted({c for s in spec.seeds for c in spec.conditions()
                                                       if (u := found.get(("aged", s, method, c))) and
                                                       u.get("monitor", {}).get("recalibrate")
                                                       and c != spec.calibrate_at}, key=spec.conditions().index)}
    return {"spec": spec.model_dump(mode="json"), "clean_ppl": clean, "rows": rows, "monitor": monitor,
            "conditions": spec.conditions()}


def _monitor_outcomes(spec: AgeSpec, found: dict, method: str) -> dict:
    """The monitor judged by outcome and against a clock and a thermometer, on the readings after calibration only:
    - by outcome (with the recalibrated reference): an alarm is *false* where recalibrating there would lower
      perplexity by less than `alarm_tolerance`, a *miss* is no alarm where it would lower it by more;
    - ρ (score against the loss since calibration) within each temperature, over times and seeds, beside the ρ of
      log t alone; and within each time, over temperatures and seeds, beside the ρ of the temperature alone: a
      monitor worth having orders readings better than a clock and a thermometer do."""
    later = [c for c in spec.conditions() if c != spec.calibrate_at]
    points = []  # (condition, seed, score, loss, alarm, gain from recalibrating or None)
    for seed in spec.seeds:
        base = found.get(("aged", seed, method, spec.calibrate_at))
        for condition in later:
            unit = found.get(("aged", seed, method, condition))
            if base is None or unit is None or "monitor" not in unit:
                continue
            again = found.get(("recalibrated", seed, method, condition))
            gain = (unit["ppl"] - again["ppl"]) / unit["ppl"] if again and again.get("ppl") else None
            points.append((Condition.parse(condition), seed, unit["monitor"]["score"], unit["ppl"] - base["ppl"],
                           bool(unit["monitor"].get("recalibrate")), gain))
    judged = [p for p in points if p[5] is not None]
    outcome = {"alarm_tolerance": spec.alarm_tolerance, "judged_readings": len(judged),
               "false_alarms_by_outcome": sum(1 for p in judged if p[4] and p[5] < spec.alarm_tolerance),
               "misses_by_outcome": sum(1 for p in judged if not p[4] and p[5] >= spec.alarm_tolerance)}
    within_temperature, within_time = {}, {}
    for temperature in spec.temperatures:
        group = [p for p in points if p[0].temperature_c == temperature]
        within_temperature[f"{degrees(temperature)}C"] = {
            "monitor": _spearman([p[2] for p in group], [p[3] for p in group]),
            "log_time": _spearman([math.log(p[0].time_s) for p in group], [p[3] for p in group]), "n": len(group)}
    for time_text in spec.times:
        moment = Condition.parse(time_text).time_s
        group = [p for p in points if p[0].time_s == moment]
        within_time[time_text] = {
            "monitor": _spearman([p[2] for p in group], [p[3] for p in group]),
            "temperature": _spearman([p[0].temperature_c for p in group], [p[3] for p in group]), "n": len(group)}
    return outcome | {"rho_within_temperature": within_temperature, "rho_within_time": within_time}


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}
