"""One campaign, in process: for each chip seed, program the chip, calibrate with each method,
evaluate, undo, and append the result; then summarise and report.

    spec = run_spec(model="romer-tiny", noise=["cim-80c"], seeds=[0, 1, 2], methods=["romer", "best"])
    results = run_campaign(spec, "runs/demo")

Units of work (each one line of results.jsonl): the clean model; each method on the clean model
(the clean-cost check); and each (noise, strength, seed, method) on a chip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from romer.calibration import calibrate_, romer_config
from romer.campaign.log import ResultsLog
from romer.campaign.spec import RunSpec
from romer.data import load_corpus
from romer.errors import RomerError
from romer.evaluation import capture_routing, default_window, perplexity, tokenize_stream
from romer.moe.telemetry import routing_fidelity
from romer.noise import apply_noise_, parse_noise_spec
from romer.progress import progress_bar


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
    clean_routing: object = None

    @classmethod
    def load(cls, spec: RunSpec) -> "Workbench":
        from romer.models import load_model

        corpus = load_corpus(spec.data, spec.split)  # data first: a bad --data fails before a big model loads
        calib = load_corpus(spec.calib_data) if spec.calib_data else load_corpus(spec.data, "calib")
        model, tokenizer = load_model(spec.model, device=spec.device, dtype=spec.dtype,
                                      trust_remote_code=spec.trust_remote_code)
        ids = tokenize_stream(tokenizer, corpus.text)
        if spec.max_tokens:
            ids = ids[: spec.max_tokens]
        window = spec.window or default_window(model)
        bench = cls(spec, model, tokenizer, ids, tokenize_stream(tokenizer, calib.text), window,
                    spec.stride or window, {**corpus.describe(), "tokens": int(ids.numel())}, calib.describe())
        if bench.dataset["sha256"] == bench.calib_dataset["sha256"]:
            raise RomerError("the calibration text is the evaluation text; pass a different --calib-data")
        return bench

    def routing_ids(self) -> torch.Tensor:
        tokens = min(self.spec.routing_tokens, self.ids.numel()) // self.window * self.window
        return self.ids[:tokens]

    def measure(self, with_routing: bool) -> dict:
        record = {"ppl": perplexity(self.model, self.ids, self.window, self.stride, self.spec.batch_size).ppl}
        routing_ids = self.routing_ids()
        if with_routing and routing_ids.numel():
            routed = capture_routing(self.model, routing_ids, self.window, self.spec.batch_size, keep_choices=True)
            metrics = routed.metrics()
            record["frequency"] = [m.frequency for m in metrics]
            record["load_cv"] = [m.cv for m in metrics]
            record["starved"] = [m.starved for m in metrics]
            if self.clean_routing is None:
                self.clean_routing = routed
            else:
                record["topk_agreement"] = [f["topk_agreement"] for f in routing_fidelity(self.clean_routing, routed)]
        if self.spec.tasks:
            from romer.evaluation.tasks import run_tasks

            record["tasks"] = run_tasks(self.model, self.tokenizer, self.spec.tasks, self.spec.batch_size,
                                        self.spec.task_limit)
        return record


def calibration_for(spec: RunSpec, method: str):
    return romer_config(**(spec.calibration | {"method": method}))


def run_campaign(spec: RunSpec, out: str | Path, force: bool = False, progress: bool = True,
                 on_record: Callable[[dict], None] | None = None) -> dict:
    """Run what `out` does not hold yet, then write results.json, report.md and the plots."""
    from romer.report import write_report

    for method in spec.methods:
        calibration_for(spec, method)  # a bad option fails before any work
    if spec.tasks:
        from romer.evaluation.tasks import check_tasks

        check_tasks(spec.tasks)
    chips = [(noise, strength, parse_noise_spec(noise).scaled(strength)) for noise in spec.noise
             for strength in spec.strengths]
    log = ResultsLog(out, spec, force)
    bench = Workbench.load(spec)

    def finish(record: dict) -> None:
        log.append(record)
        if on_record is not None:
            on_record(record)

    units = 1 + (len(spec.methods) - 1) * spec.clean_cost + len(chips) * len(spec.seeds) * len(spec.methods)
    with progress_bar("campaign", total=units, enabled=progress) as advance:
        if log.done(kind="clean") is None:
            finish({"kind": "clean", **bench.measure(with_routing=True)})  # also keeps the clean routing reference
        elif bench.routing_ids().numel():
            bench.clean_routing = capture_routing(bench.model, bench.routing_ids(), bench.window, spec.batch_size,
                                                  keep_choices=True)
        advance(1)
        for method in spec.methods[1:] if spec.clean_cost else []:
            if log.done(kind="calibrated_clean", method=method) is None:
                calibration = calibrate_(bench.model, calibration_for(spec, method), bench.calib_ids)
                finish({"kind": "calibrated_clean", "method": method, **bench.measure(with_routing=False)})
                calibration.remove()
            advance(1)
        for noise, strength, config in chips:
            for seed in spec.seeds:
                pending = [m for m in spec.methods
                           if log.done(kind="chip", noise=noise, strength=strength, seed=seed, method=m) is None]
                advance(len(spec.methods) - len(pending))
                if not pending:
                    continue
                with apply_noise_(bench.model, config, seed) as chip:
                    for method in pending:
                        started = time.perf_counter()
                        calibration = None
                        if method != "none":
                            calibration = calibrate_(bench.model, calibration_for(spec, method), bench.calib_ids,
                                                     chip=chip)
                        seconds = time.perf_counter() - started
                        record = {"kind": "chip", "noise": noise, "strength": strength, "seed": seed,
                                  "method": method, "calib_seconds": seconds, **bench.measure(with_routing=True)}
                        if calibration is not None:
                            summary = calibration.as_dict()
                            record["calibration"] = {"config": summary["config"],
                                                     "replacements": len(summary["replacements"]),
                                                     "digital": summary["digital"]}
                            calibration.remove()
                        finish(record)
                        advance(1)
    return write_report(spec, log.records.values(), bench, Path(out))
