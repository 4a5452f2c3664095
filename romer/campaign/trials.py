"""A campaign's units of work, grouped into trials: what one worker does with the model loaded.

A trial is the clean reference, the clean-cost checks, or one chip instance (noise, strength,
seed) with each of its pending methods: the chip is programmed once, and every method calibrates,
is measured and is undone on it. Trials share nothing but the loaded model, so any back end may
run them in any order and on any worker; each yields one record per unit, the line that
results.jsonl keeps.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Iterator

from romer.calibration import calibrate_, calibration_config, get_method
from romer.calibration.registry import former_names, refuse_unread
from romer.campaign.log import ResultsLog
from romer.campaign.spec import RunSpec
from romer.cost import token_usage
from romer.crashpoints import crash_point
from romer.noise import parse_noise_spec


@dataclass(frozen=True)
class Trial:
    kind: str  # "clean", "calibrated_clean" or "chip"
    methods: tuple[str, ...] = ()
    noise: str | None = None
    strength: float | None = None
    seed: int | None = None

    @property
    def units(self) -> int:
        return 1 if self.kind == "clean" else len(self.methods)

    def label(self) -> str:
        if self.kind == "chip":
            return f"{self.noise} × {self.strength:g}, seed {self.seed}"
        return self.kind.replace("_", " ")


def calibration_for(spec: RunSpec, label: str):
    """The settings of method or variant `label` in this campaign: the campaign's options that its method reads (an
    option is given once for every method of the run; each takes what it uses), then the variant's own settings."""
    method, settings = spec.method_of(label), spec.settings_of(label)
    reads = get_method(method).fields()
    refuse_unread(settings, reads, f"method {method} (variant {label})")
    return calibration_config(**({k: v for k, v in spec.calibration.items() if k in reads} | settings
                                 | {"method": method}))


def refuse_unread_options(spec: RunSpec) -> None:
    """A campaign option that no method of the run reads is a one-line error naming it."""
    calibration_config(**spec.calibration)  # every option exists and is valid
    refuse_unread(spec.calibration, set().union(*(get_method(spec.method_of(m)).fields() for m in spec.methods)),
                  f"any method of this run ({', '.join(spec.methods)})")


def requested(spec: RunSpec, method: str, name: str | None = None) -> str:
    """Fingerprint of the calibration settings a unit asks for, defaults included (a changed default changes it);
    `name`: the method's name as written in the settings (a former name, for units recorded under it)."""
    settings = calibration_for(spec, method).model_dump(mode="json") | {"method": name or method}
    if not settings["step_options"]:  # no plugin step's options asked for: the settings as before they existed
        del settings["step_options"]
    if method in spec.variants:  # a labelled variant: its label is part of what was asked for
        settings |= {"method": spec.method_of(method), "label": method}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def stale_unit(spec: RunSpec, log: ResultsLog) -> dict | None:
    """A calibrated unit in `log` made with other calibration settings than `spec` asks for now (an older romer
    whose options or defaults differ), which a resume would otherwise mix silently with this run's numbers. A unit
    recorded under a method's former name counts as that method's."""
    fields = set(calibration_for(spec, "none").model_dump())
    for record in log.records.values():
        done = record.get("calibration")
        if not done:
            continue
        if "requested" not in done:
            stale = set(done.get("config", {})) != fields
        else:
            method = record["method"]
            stale = done["requested"] not in {requested(spec, method, name) for name in [method, *former_names(method)]}
        if stale:
            return record
    return None


def total_units(spec: RunSpec) -> int:
    chips = len(spec.chips()) * len(spec.seeds)
    return 1 + (len(spec.methods) - 1) * spec.clean_cost + chips * len(spec.methods)


def plan_trials(spec: RunSpec, log: ResultsLog) -> list[Trial]:
    """The trials that still have unfinished units, in the order a single worker runs them."""
    trials = []
    if log.done(kind="clean") is None:
        trials.append(Trial("clean"))
    if spec.clean_cost:
        pending = tuple(m for m in spec.methods[1:] if log.done(kind="calibrated_clean", method=m) is None)
        if pending:
            trials.append(Trial("calibrated_clean", pending))
    for chip in spec.chips():
        for seed in spec.seeds:
            pending = tuple(m for m in spec.methods if log.done(kind="chip", noise=chip.noise, strength=chip.strength,
                                                                seed=seed, method=m) is None)
            if pending:
                trials.append(Trial("chip", pending, chip.noise, chip.strength, seed))
    return trials


def run_trial(bench, trial: Trial) -> Iterator[dict]:
    """The records of one trial, each yielded as soon as it is measured; the model ends clean."""
    spec = bench.spec
    if trial.kind == "clean":
        yield {"kind": "clean", **bench.measure(with_routing=True, agreement=False)}
        return
    if trial.kind == "calibrated_clean":
        for method in trial.methods:
            calibration = calibrate_(bench.model, calibration_for(spec, method), bench.calib_ids)
            crash_point("calibrated")
            yield {"kind": "calibrated_clean", "method": method, **bench.measure(with_routing=False)}
            calibration.remove()
        return
    bench.clean_reference()  # top-k agreement compares with the clean model's routing
    config = parse_noise_spec(trial.noise).scaled(trial.strength)
    with bench.program(config, trial.seed) as chip:
        for method in trial.methods:
            started = time.perf_counter()
            calibration = None
            if method != "none":
                calibration = calibrate_(bench.model, calibration_for(spec, method), bench.calib_ids, chip=chip)
                crash_point("calibrated")
            seconds = time.perf_counter() - started
            record = {"kind": "chip", "noise": trial.noise, "strength": trial.strength, "seed": trial.seed,
                      "method": method, "calib_seconds": seconds, "experts_path": chip.experts_path(),
                      **bench.measure(with_routing=True)}
            # what each token asked of this chip with this method, priced in the report (romer.cost)
            record["usage"] = token_usage(bench.model, chip, calibration, record.get("frequency")).as_dict()
            if method in spec.variants:
                record["variant"] = {"label": method, "method": spec.method_of(method),
                                     "settings": spec.settings_of(method)}
            if calibration is not None:
                summary = calibration.as_dict()
                record["calibration"] = {"config": summary["config"], "requested": requested(spec, method),
                                         "replacements": len(summary["replacements"]), "digital": summary["digital"],
                                         "digital_share": calibration.digital_share()}
                if "retune" in calibration.report:  # what the fit added, counted against its budget
                    fit = calibration.report["retune"]
                    record["calibration"]["retune"] = {k: fit[k] for k in (
                        "parameters_added", "budget_parameters", "budget_fraction_used", "norm_parameters",
                        "chip_weights", "seconds", "seconds_before_fit", "fit_seconds", "plan_seconds", "plan_tokens",
                        "engine", "plan_engine") if k in fit}
                    if "blockwise" in fit:
                        record["calibration"]["retune"]["block_seconds"] = [
                            b["seconds"] for b in fit["blockwise"]["blocks"]]
                stages = {"clean_twin_seconds": calibration.report.get("clean_twin_seconds"),
                          "outliers_seconds": calibration.report.get("outliers", {}).get("seconds")}
                record["calibration"] |= {k: v for k, v in stages.items() if v is not None}
                if method != trial.methods[-1]:
                    calibration.remove()  # the last one goes with the chip's restore, which reprograms nothing
            yield record
