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

The spec is `campaign/age_spec.py`; the summary, report and plot are `report/age_summary.py`, `age_markdown.py` and
`age_plots.py`, as `romer run`'s are split between `campaign/` and `report/`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from romer.calibration import calibrate_, get_method, refresh_, refresh_teacher, refreshable
from romer.campaign.age_spec import AgeSpec
from romer.campaign.lock import folder_lock
from romer.campaign.log import ResultsLog
from romer.campaign.run import Workbench
from romer.campaign.trials import calibration_for
from romer.crashpoints import crash_point
from romer.diagnosis.monitor import Snapshot, drift_score, reference, snapshot
from romer.errors import RomerError
from romer.noise import Condition, apply_noise_, parse_noise_spec
from romer.noise.config import validated
from romer.progress import progress_bar
from romer.report.age_markdown import write_age_report
from romer.report.age_summary import summarize_age


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
                          or (spec.refreshes(method, c) and
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
        if calibration is not None and any(spec.refreshes(method, c) for c in wanted) and refreshable(calibration):
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
            if spec.refreshes(method, condition):
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
