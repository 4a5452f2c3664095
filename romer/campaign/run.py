"""One campaign: load the work bench, run the trials a back end is given, append each finished
unit to results.jsonl, then summarise and report.

    spec = run_spec(model="romer-tiny", noise=["cim-80c"], seeds=[0, 1, 2], methods=["romer", "tuned"])
    results = run_campaign(spec, "runs/demo")                                  # in this process
    results = run_campaign(spec, "runs/demo", backend=RayBackend(workers=4))   # on a Ray cluster

Units of work (each one line of results.jsonl): the clean model; each method on the clean model
(the clean-cost check); and each (noise, strength, seed, method) on a chip. `trials.py` groups
them into trials and runs one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch

from romer.calibration import load_calibration, resolve
from romer.calibration.methods.ahwa_lora import training_corpus
from romer.campaign.lock import folder_lock
from romer.campaign.log import ResultsLog
from romer.campaign.spec import RunSpec
from romer.campaign.trials import (Trial, calibration_for, plan_trials, refuse_unread_options, run_trial, stale_unit,
                                   total_units)
from romer.data import load_corpus
from romer.data.calibration_text import CalibrationSource
from romer.errors import RomerError
from romer.evaluation import capture_routing, default_window, perplexity, tokenize_stream
from romer.moe.telemetry import routing_fidelity
from romer.noise import apply_noise_, parse_noise_spec
from romer.progress import progress_bar


def refuse_training_on_evaluation(spec: RunSpec, evaluation, folder: Path) -> None:
    """A method that trains on its own text (ahwa-lora's lora_train_data) never trains on the evaluation text."""
    named = {spec.calibration.get("lora_train_data")} | {spec.settings_of(label).get("lora_train_data")
                                                         for label in spec.methods}
    for value in sorted(v for v in named if v):
        if training_corpus(value, folder).sha256 == evaluation.sha256:
            raise RomerError(f"lora_train_data '{value}' is the evaluation text; train on another split "
                             "(e.g. stdlib:train) and evaluate on the test split")


@dataclass
class Workbench:
    """What every unit needs, loaded once: model, tokenizer, evaluation and calibration tokens."""

    spec: RunSpec
    model: torch.nn.Module
    tokenizer: object
    ids: torch.Tensor
    calib_ids: torch.Tensor
    window: int
    stride: int
    dataset: dict
    calib_dataset: dict
    batch_size: int
    clean_routing: object = None
    calibration: object = None  # a calibration saved with the model (`romer calibrate --save`), installed

    def program(self, noise, seed: int):
        """The model on chip instance `seed` of `noise`, with the saved calibration's digital parts if it has one."""
        return apply_noise_(self.model, noise, seed, calibration=self.calibration)

    @classmethod
    def load(cls, spec: RunSpec, calibration: bool = True) -> "Workbench":
        """Model, tokenizer and token streams; `calibration=False` skips the calibration text (eval, profile)."""
        from romer.models import load_model

        corpus = load_corpus(spec.data, spec.split)  # data first: a bad --data fails before a big model loads
        calib = CalibrationSource.parse(spec.calib_data, spec.data) if calibration else None
        if calib:
            calib.refuse_overlap(corpus)
        model, tokenizer = load_model(spec.model, device=spec.device, dtype=spec.dtype,
                                      trust_remote_code=spec.trust_remote_code)
        if calib:
            refuse_training_on_evaluation(spec, corpus, Path(str(model.name_or_path)))
        ids = tokenize_stream(tokenizer, corpus.text)
        if spec.max_tokens:
            ids = ids[: spec.max_tokens]
        window = spec.window or default_window(model)
        calib_ids = (calib.token_ids(model, tokenizer, window, tokenize_stream) if calib
                     else torch.empty(0, dtype=torch.long))
        if calib and calib_ids.numel() < window:
            raise RomerError(f"the calibration data has {calib_ids.numel()} tokens, fewer than one sequence of {window}; "
                             "give more calibration text or a smaller window")
        saved = Path(str(model.name_or_path))
        return cls(spec, model, tokenizer, ids,
                   calib_ids, window,
                   spec.stride or window, {**corpus.describe(), "tokens": int(ids.numel())},
                   calib.describe(calib_ids) if calib else {},
                   fitting_batch_size(spec, window) if spec.batch_size == "auto" else spec.batch_size,
                   calibration=load_calibration(model, saved) if saved.is_dir() else None)

    def routing_ids(self) -> torch.Tensor:
        tokens = min(self.spec.routing_tokens, self.ids.numel()) // self.window * self.window
        return self.ids[:tokens]

    def describe(self) -> dict:
        """What the report says about the inputs."""
        return {"dataset": self.dataset, "calib_dataset": self.calib_dataset, "window": self.window,
                "stride": self.stride}

    def clean_reference(self) -> None:
        """The clean model's routing on the routing tokens (call while the model is clean)."""
        if self.clean_routing is None and self.routing_ids().numel():
            self.clean_routing = capture_routing(self.model, self.routing_ids(), self.window, self.batch_size,
                                                 keep_choices=True)

    def measure(self, with_routing: bool, agreement: bool = True) -> dict:
        """Perplexity, and optionally load and (`agreement`) top-k agreement with the clean routing;
        `agreement=False` is the clean model's own measurement, kept as that reference."""
        record = {"ppl": perplexity(self.model, self.ids, self.window, self.stride, self.batch_size).ppl}
        routing_ids = self.routing_ids()
        if with_routing and routing_ids.numel():
            routed = capture_routing(self.model, routing_ids, self.window, self.batch_size, keep_choices=True)
            metrics = routed.metrics()
            record["frequency"] = [m.frequency for m in metrics]
            record["load_cv"] = [m.cv for m in metrics]
            record["starved"] = [m.starved for m in metrics]
            if not agreement:
                self.clean_routing = self.clean_routing or routed
            else:
                record["topk_agreement"] = [f["topk_agreement"] for f in routing_fidelity(self.clean_routing, routed)]
        if self.spec.tasks:
            from romer.evaluation.tasks import run_tasks

            record["tasks"] = run_tasks(self.model, self.tokenizer, self.spec.tasks, self.batch_size,
                                        self.spec.task_limit)
        return record


def fitting_batch_size(spec: RunSpec, window: int) -> int:
    """`batch_size: auto`: the largest batch the free memory holds now, with the model loaded."""
    from romer.scale.memory import estimate_memory, free_device_bytes

    estimate = estimate_memory(spec.model, spec.dtype, window, spec.trust_remote_code, spec.device != "cpu")
    size = estimate.fit_batch_size(free_device_bytes(spec.device) + estimate.weights_bytes)
    if size < 1:
        raise RomerError(f"one window of {window} tokens does not fit the free memory of {spec.device}; "
                         "use a smaller --window or a larger device")
    return size


class Backend(Protocol):
    """Runs trials somewhere and yields each finished unit's record (in any order)."""

    def run(self, spec: RunSpec, trials: list[Trial]) -> Iterator[dict]: ...

    def describe(self) -> dict | None:
        """The work bench's inputs, once a worker has loaded them (None before)."""


class LocalBackend:
    """Every trial in this process, one after another, on one loaded model."""

    def __init__(self) -> None:
        self.bench: Workbench | None = None

    def workbench(self, spec: RunSpec) -> Workbench:
        """The work bench, loaded on first use."""
        if self.bench is None:
            self.bench = Workbench.load(spec)
        return self.bench

    def run(self, spec: RunSpec, trials: list[Trial]) -> Iterator[dict]:
        bench = self.workbench(spec)
        for trial in trials:
            yield from run_trial(bench, trial)

    def describe(self) -> dict | None:
        return self.bench.describe() if self.bench is not None else None


def check_spec(spec: RunSpec) -> None:
    """Fail on a bad method option, task or chip before any model loads."""
    refuse_unread_options(spec)
    for method in spec.methods:
        resolve(calibration_for(spec, method))  # a setting the method's resolved steps would not read is refused
    for chip in spec.chips():
        parse_noise_spec(chip.noise).scaled(chip.strength)
    if spec.tasks:
        from romer.evaluation.tasks import check_tasks

        check_tasks(spec.tasks)


def run_campaign(spec: RunSpec, out: str | Path, force: bool = False, progress: bool = True,
                 on_record: Callable[[dict], None] | None = None, backend: Backend | None = None) -> dict:
    """Run what `out` does not hold yet, then write results.json, report.md and the plots."""
    from romer.report import write_report

    check_spec(spec)
    with folder_lock(out):  # one writer per folder, for the whole run (the Ray driver included)
        log = ResultsLog(out, spec, force)
        stale = stale_unit(spec, log)
        if stale is not None:
            if not force:
                raise RomerError(f"{out} holds `{stale['method']}` results made with other calibration settings (an "
                                 "older romer, or changed defaults); choose another --out, or pass --force to discard "
                                 "them")
            log.discard()
            log = ResultsLog(out, spec, force)
        backend = backend or LocalBackend()
        trials = plan_trials(spec, log)
        total = total_units(spec)
        with progress_bar("campaign", total=total, enabled=progress) as advance:
            advance(total - sum(t.units for t in trials))
            for record in backend.run(spec, trials):
                if log.append(record):
                    advance(1)
                    if on_record is not None:
                        on_record(record)
        inputs = backend.describe() or log.inputs
        if inputs is None:  # every unit was done before run.json kept the inputs
            inputs = LocalBackend().workbench(spec).describe()
        log.keep_inputs(inputs)
        return write_report(spec, log.records.values(), inputs, Path(out))
