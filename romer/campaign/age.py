"""`romer age`: a chip in the field. Each method is calibrated once, at one moment, and read unchanged later.

    spec = age_spec(noise="pcm-cim", methods=["none", "romer"], seeds=[0], calibrate_at="1h@25C",
                    times=["1h", "1mo", "1y"], temperatures=[25, 80])
    results = run_age(spec, "runs/age")

For each chip seed and method: the chip is programmed and read at `calibrate_at`, the method calibrates it
there, and the same chip instance (same programming errors, drift exponents and periphery draws) is then
read at every (time since programming, temperature) of the grid with its calibration unchanged
(`ChipHandle.move_to`). Beside it, unless `reference` is off, the method is fitted afresh at each condition:
what a recalibration would bring back there; with `refresh_steps`, the calibration's fitted numbers are also
refreshed there (`romer.refresh_`). At each aged reading the monitor (`romer.diagnosis.monitor`) compares the
chip's statistics on a stored probe of calibration text (or on live traffic) with the ones stored at calibration,
so its drift score and its alarms can be set against the true loss.

Units (one line each in results.jsonl, resumable, one writer per folder): the clean model; (seed, method,
condition) aged; (seed, method, condition) recalibrated; (seed, method, condition) refreshed. Recovery of the gap at a condition is measured
against `none` at that same condition and chip seed (paired), so it says how much of the damage present
then the calibration still repairs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from romer.atomic import write_text_atomic
from romer.calibration import calibrate_, get_method, refresh_, refresh_teacher, refreshable
from romer.campaign.lock import folder_lock
from romer.campaign.log import ResultsLog
from romer.campaign.run import Workbench
from romer.campaign.spec import run_spec
from romer.campaign.trials import calibration_for
from romer.crashpoints import crash_point
from romer.diagnosis.monitor import ALARM_FRACTION, FLOOR_WINDOWS, SIGMAS, Snapshot, drift_score, reference, snapshot
from romer.errors import RomerError
from romer.noise import Condition, apply_noise_, parse_noise_spec
from romer.noise.config import validated
from romer.progress import progress_bar
from romer.validation import build


class AgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("romer-tiny", description="romer-tiny, a local folder or a hub id")
    data: str = Field("stdlib", description="evaluation corpus (its test split)")
    calib_data: str | None = Field(None, description="calibration text; default: the calib split of `data`")
    noise: str = Field("pcm-cim", description="the chip: a preset with drift (time) and temperature terms")
    seeds: list[int] = Field([0], description="chip instances")
    methods: list[str] = Field(["none", "romer"], description="calibration methods (`none` is always measured)")
    calibration: dict = Field(default_factory=dict, description="CalibrationConfig options; each method takes those "
                                                                "it reads")
    calibrate_at: str = Field("1h@25C", description="the moment each method is calibrated at")
    times: list[str] = Field(["1h", "1mo", "1y"], description="times since programming the chip is read at")
    temperatures: list[float] = Field([25.0, 80.0], description="operating temperatures, °C")
    reference: bool = Field(True, description="also fit each method afresh at every condition")
    refresh_steps: int = Field(0, ge=0, le=100000, description="also refresh each fitted calibration at every later "
                                                                "condition with this many steps of retune's fit from "
                                                                "the values it carries (romer.refresh_); 0: off")
    refresh_lr: float | None = Field(None, gt=0, le=1, description="the refresh's Adam learning rate (default: the "
                                                                   "fit's own retune_lr)")
    refresh_batch_size: int | None = Field(None, ge=1, le=4096, description="sequences per refresh step (default: "
                                                                             "the calibration's batch_size)")
    max_tokens: int | None = Field(4096, ge=1, description="evaluation tokens (the first N of the test split)")
    monitor: Literal["probe", "live"] = Field("probe", description="what the drift monitor reads: a stored probe "
                                                                   "of calibration text, replayed at each check, or "
                                                                   "live traffic (windows of the evaluation split "
                                                                   "after the scored tokens)")
    monitor_tokens: int = Field(4096, ge=64, description="tokens the monitor reads per check (the probe, or each "
                                                         "live window)")
    monitor_floor_windows: int = Field(FLOOR_WINDOWS, ge=2, le=64, description="reads of the unchanged chip at "
                                                                              "calibration (probe replays, or live "
                                                                              "windows): the floor's mean and spread")
    alarm_tolerance: float = Field(0.01, ge=0, le=1, description="an alarm is false where recalibrating there would "
                                                              "lower perplexity by less than this share (needs the "
                                                              "recalibrated reference)")
    window: int | None = Field(None, ge=2)
    batch_size: int = Field(8, ge=1)
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False

    @field_validator("calibrate_at")
    @classmethod
    def _moment(cls, text: str) -> str:
        condition = Condition.parse(text)
        if condition.time_s is None or condition.temperature_c is None:
            raise ValueError("calibrate_at needs a time and a temperature, e.g. 1h@25C")
        return text

    @field_validator("times")
    @classmethod
    def _times(cls, times: list[str]) -> list[str]:
        for text in times:
            if Condition.parse(text).time_s is None:
                raise ValueError(f"{text!r} is not a time since programming (e.g. 1h, 1d, 1w, 1mo, 1y)")
        return times

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, temperatures: list[float]) -> list[float]:
        for value in temperatures:
            if not math.isfinite(value):
                raise ValueError(f"{value} is not a temperature; give °C between -60 and 200")
            Condition(temperature_c=value)  # the physical range, in one line
        if len(set(temperatures)) != len(temperatures):
            raise ValueError(f"{temperatures} lists a temperature twice; give each once")
        return temperatures

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        return ["none"] + [m for m in methods if m != "none"]

    @model_validator(mode="after")
    def _reads_after_calibration(self) -> "AgeSpec":
        """Every read is a moment after programming and no earlier than the calibration: a chip cannot be read before
        it was calibrated, nor at the programming itself."""
        calibrated = Condition.parse(self.calibrate_at).time_s
        if calibrated <= 0:
            raise ValueError(f"calibrate_at {self.calibrate_at!r} is the programming itself; calibrate after it "
                             "(e.g. 1h@25C)")
        seen = set()
        for text in self.times:
            time = Condition.parse(text).time_s
            if time in seen:
                raise ValueError(f"times list {text!r} twice (or two spellings of one time); give each once")
            seen.add(time)
            if time < calibrated:
                raise ValueError(f"time {text!r} is before the calibration at {self.calibrate_at!r}; read the chip "
                                 f"at or after the moment it was calibrated")
        return self

    def conditions(self) -> list[str]:
        """Every condition of the grid, `calibrate_at` first (the reading the others are compared with)."""
        grid = [f"{time}@{_degrees(t)}C" for t, time in itertools.product(self.temperatures, self.times)]
        return [self.calibrate_at] + [c for c in grid if Condition.parse(c) != Condition.parse(self.calibrate_at)]

    def run_fields(self) -> dict:
        return {"model": self.model, "data": self.data, "calib_data": self.calib_data, "noise": [self.noise],
                "seeds": self.seeds, "methods": self.methods, "calibration": self.calibration,
                "window": self.window, "batch_size": self.batch_size,
                "device": self.device, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
                "routing_tokens": 0, "clean_cost": False}

    def run_spec(self):
        """The same model, data and calibration as a `romer run` spec (the work bench and each method's settings)."""
        return run_spec(**self.run_fields())

    def fingerprint(self) -> str:
        fields = self.model_dump(exclude={"device", "seeds"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprints(self) -> set[str]:
        return {self.fingerprint()}


def _degrees(value: float) -> str:
    return f"{value:g}"


def age_spec(**fields) -> AgeSpec:
    """An AgeSpec from the fields given (None: the default), or a one-line RomerError naming the first bad one."""
    return build(AgeSpec, {k: v for k, v in fields.items() if v is not None}, "age option",
                 "see `romer age --help`", flags=True)


def run_age(spec: AgeSpec, out: str | Path, force: bool = False, progress: bool = True,
            on_record: Callable[[dict], None] | None = None) -> dict:
    """Measure what `out` does not hold yet, then write results.json, report.md and aging.png."""
    from romer.campaign.run import check_spec

    noise = parse_noise_spec(spec.noise)
    for condition in spec.conditions():
        Condition.parse(condition).applied_to(noise)  # every moment is a valid chip before anything loads
    check_spec(spec.run_spec())
    with folder_lock(out):
        log = ResultsLog(out, spec, force)
        conditions = spec.conditions()
        calibrated = [m for m in spec.methods if m != "none"]
        later = len(conditions) - 1
        total = 1 + len(spec.seeds) * (len(spec.methods) * len(conditions)
                                       + len(calibrated) * later * (spec.reference + bool(spec.refresh_steps)))
        bench = None
        with progress_bar("age", total=total, enabled=progress) as advance:
            advance(len(log.records))

            def keep(record: dict) -> None:
                if log.append(record):
                    advance(1)
                    if on_record is not None:
                        on_record(record)

            def workbench() -> tuple[Workbench, list]:
                nonlocal bench
                bench = bench or _scored_bench(spec)
                return bench

            if log.done(kind="clean") is None:
                keep({"kind": "clean", "ppl": workbench()[0].measure(with_routing=False)["ppl"]})
            for seed, method in itertools.product(spec.seeds, spec.methods):
                wanted = [c for c in conditions if log.done(kind="aged", seed=seed, method=method, condition=c) is None
                          or (refreshing(spec, method, c) and
                              log.done(kind="refreshed", seed=seed, method=method, condition=c) is None)]
                if wanted:
                    for record in _aged(*workbench(), spec, noise, seed, method, wanted):
                        keep(record)
                if spec.reference and method != "none":
                    for condition in conditions[1:]:
                        if log.done(kind="recalibrated", seed=seed, method=method, condition=condition) is None:
                            keep(_recalibrated(workbench()[0], spec, noise, seed, method, condition))
        summary = summarize_age(spec, list(log.records.values()))
        return write_age_report(spec, summary, Path(out))


def _scored_bench(spec: AgeSpec) -> tuple[Workbench, tuple]:
    """The work bench with the first `max_tokens` of the evaluation split scored, and what the monitor reads:
    (reference, floor windows or None for probe replays, the later check's tokens). A probe is the last `monitor_tokens` of
    the calibration text, cut from what every calibration of the run reads (held out from every fit), read at every
    check; live traffic is the evaluation split after the
    scored tokens (never scored): a reference window, `monitor_floor_windows` windows, and one later window, the same
    at every condition."""
    bench = Workbench.load(spec.run_spec())
    scored = spec.max_tokens or bench.ids.numel()
    if spec.monitor == "probe":
        # held out: the calibration text's last tokens, which no calibration of the run reads (they are cut from what
        # the methods see), so that a fitted method is never judged on its own fit text
        size = min(spec.monitor_tokens, bench.calib_ids.numel() - bench.window) // bench.window * bench.window
        if size < bench.window:
            raise RomerError(f"the calibration text has {bench.calib_ids.numel()} tokens: too few for a held-out "
                             f"monitor probe of one {bench.window}-token window beside one window to calibrate on; "
                             "give more calibration text, or use --monitor live")
        probe = bench.calib_ids[-size:]
        bench = replace(bench, ids=bench.ids[:scored], calib_ids=bench.calib_ids[:-size])
        return bench, (probe, None, probe, _clean(bench, probe))
    window = min(spec.monitor_tokens, bench.ids.numel()) // bench.window * bench.window
    count = spec.monitor_floor_windows + 2
    traffic = bench.ids[scored:scored + count * window]
    if window < bench.window or traffic.numel() < count * window:
        raise RomerError(f"the evaluation split has {bench.ids.numel()} tokens: too few for {scored} scored tokens and "
                         f"{count} monitor windows of {spec.monitor_tokens}; lower --max-tokens, --monitor-tokens or "
                         "--monitor-floor-windows, or use --monitor probe")
    windows = [traffic[i * window:(i + 1) * window] for i in range(count)]
    return replace(bench, ids=bench.ids[:scored]), (windows[0], windows[1:-1], windows[-1], _clean(bench, windows[0]))


def _clean(bench: Workbench, ids) -> Snapshot:
    """The clean model's monitor statistics on the reference tokens (in the lab, before any chip)."""
    return snapshot(bench.model, ids, bench.window, bench.batch_size)


def refreshing(spec: AgeSpec, method: str, condition: str) -> bool:
    return bool(spec.refresh_steps) and method != "none" and condition != spec.calibrate_at


def _aged(bench: Workbench, traffic: list, spec: AgeSpec, noise, seed: int, method: str, wanted: list[str]):
    """Calibrate at `calibrate_at`, then read the same chip at each wanted condition, the calibration unchanged; with
    `refresh_steps`, also refreshed there (and the refresh undone before the next condition). A refreshing chip keeps
    the clean twin's targets on the calibration text from calibration (`refresh_teacher`, once): in the field there
    is no clean twin, so a refresh pays only its steps."""
    start = Condition.parse(spec.calibrate_at)
    with apply_noise_(bench.model, noise, seed, at=start) as chip:
        started = time.perf_counter()
        calibration = None
        if method != "none":
            calibration = calibrate_(bench.model, calibration_for(spec.run_spec(), method),
                                     bench.calib_ids, chip=chip)
            crash_point("calibrated")
        seconds = time.perf_counter() - started
        kept = None
        if calibration is not None and any(refreshing(spec, method, c) for c in wanted) and refreshable(calibration):
            started = time.perf_counter()
            kept = (refresh_teacher(bench.model, calibration, bench.calib_ids, spec.refresh_batch_size),
                    time.perf_counter() - started)
        first, floor, later, clean = traffic
        stored = reference(bench.model, first, bench.window, bench.batch_size, clean=clean, others=floor,
                           replays=spec.monitor_floor_windows)
        on_move = get_method(spec.run_spec().method_of(method)).on_move if calibration is not None else None
        for condition in wanted:
            chip.move_to(Condition.parse(condition))
            if on_move is not None:  # what the method itself does where the chip stands now (a read-out re-read)
                on_move(calibration, chip)
            monitor = drift_score(stored, snapshot(bench.model, later, bench.window, bench.batch_size))
            yield {"kind": "aged", "seed": seed, "method": method, "condition": condition, "calib_seconds": seconds,
                   "ppl": bench.measure(with_routing=False)["ppl"], "monitor": monitor,
                   **({"reread": True} if on_move is not None else {})}
            if refreshing(spec, method, condition):
                yield _refreshed(bench, spec, calibration, seed, method, condition, seconds, kept)
        if calibration is not None:
            calibration.remove()


def _refreshed(bench: Workbench, spec: AgeSpec, calibration, seed: int, method: str, condition: str,
               calib_seconds: float, kept: tuple | None) -> dict:
    record = {"kind": "refreshed", "seed": seed, "method": method, "condition": condition,
              "calib_seconds": calib_seconds}
    if not refreshable(calibration):
        return record | {"skipped": "no digital numbers fitted against the clean twin: refreshing it is calibrating "
                                    "it again"}
    teacher, teacher_seconds = kept
    refresh = refresh_(bench.model, calibration, bench.calib_ids, spec.refresh_steps, lr=spec.refresh_lr,
                       batch_size=spec.refresh_batch_size, teacher=teacher)
    record |= {"ppl": bench.measure(with_routing=False)["ppl"],
               "refresh": {k: v for k, v in refresh.items() if k != "mark"} | {"kept_teacher_seconds": teacher_seconds},
               "refresh_share_of_fit": refresh["seconds"] / calib_seconds}
    calibration.rollback(refresh["mark"])
    return record


def _recalibrated(bench: Workbench, spec: AgeSpec, noise, seed: int, method: str, condition: str) -> dict:
    """The same chip at `condition` (its read noise anchored at the calibration, as the aged chip's), fitted afresh."""
    anchored = validated(noise.model_dump() | {"read_anchor_s": Condition.parse(spec.calibrate_at).time_s})
    with apply_noise_(bench.model, anchored, seed, at=Condition.parse(condition)) as chip:
        started = time.perf_counter()
        calibration = calibrate_(bench.model, calibration_for(spec.run_spec(), method),
                                 bench.calib_ids, chip=chip)
        crash_point("calibrated")
        record = {"kind": "recalibrated", "seed": seed, "method": method, "condition": condition,
                  "calib_seconds": time.perf_counter() - started, "ppl": bench.measure(with_routing=False)["ppl"]}
        calibration.remove()
    return record


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
        within_temperature[f"{_degrees(temperature)}C"] = {
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
                if refreshing(spec, method, condition) and row.get("refreshed"):
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


def plot_age(spec: AgeSpec, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperatures = spec.temperatures
    figure, axes = plt.subplots(1, len(temperatures), figsize=(4.5 * len(temperatures) + 2.2, 3.6), squeeze=False,
                                sharey=True)
    for axis, temperature in zip(axes[0], temperatures):
        for index, method in enumerate(m for m in spec.methods if m != "none"):
            color = f"C{index}"
            for kind, style in (("aged", "o-"), ("recalibrated", "s--"), ("refreshed", "^:")):
                points = []
                for row in summary["rows"]:
                    condition = Condition.parse(row["condition"])
                    entry = row.get(kind) or (row.get("aged") if row["condition"] == spec.calibrate_at else None)
                    if row["method"] == method and condition.temperature_c == temperature and entry \
                            and entry.get("recovery"):
                        points.append((condition.time_s, entry["recovery"]["mean"], entry["recovery"]["std"]))
                shown = {"aged": True, "recalibrated": spec.reference, "refreshed": bool(spec.refresh_steps)}[kind]
                if len(points) > (kind == "refreshed") and shown:
                    points.sort()
                    axis.errorbar([p[0] / 3600 for p in points], [p[1] for p in points], [p[2] for p in points],
                                  fmt=style, color=color, capsize=2,
                                  label=f"{method}" + ("" if kind == "aged" else f" ({kind})"))
        axis.set_xscale("log")
        axis.set_xlabel("hours since programming")
        axis.set_title(f"{temperature:g} °C")
        axis.axhline(0, color="grey", lw=0.5)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("recovery of the gap, %")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the panels, not on them
    figure.suptitle(f"{spec.model} on {spec.noise}, calibrated at {spec.calibrate_at}")
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")  # a reader sees the old plot or the new one
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
