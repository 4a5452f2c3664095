"""One-shot work on the work bench: `eval` (perplexity clean and per chip seed), `profile` (expert load and
routing fidelity), `diagnose` (where the damage sits, what router calibration can reach), `calibrate` (one
chip, optionally saved) and `estimate` (memory). Each returns the JSON record its command prints; the
command line only parses and prints."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from romer.atomic import write_text_atomic
from romer.calibration import CalibrationConfig
from romer.campaign.run import Workbench
from romer.campaign.spec import RunSpec
from romer.evaluation import expert_load, perplexity, profile_routing
from romer.noise import NoiseConfig


def _inputs(bench: Workbench) -> dict:
    return {"model": bench.spec.model, "model_path": str(bench.model.name_or_path), "dataset": bench.dataset}


def evaluate(spec: RunSpec, noise: NoiseConfig | None = None, seeds: list[int] = (), with_load: bool = False,
             progress: bool = True) -> dict:
    """Perplexity clean and, with `noise`, on each chip seed (windows of spec.window every spec.stride, by default
    the window)."""
    bench = Workbench.load(spec, calibration=False)
    model, ids = bench.model, bench.ids
    result = perplexity(model, ids, bench.window, spec.stride, bench.batch_size, progress=progress, label="clean")
    record = {**_inputs(bench), "window": result.window, "stride": result.stride, "ppl": result.ppl,
              "nll_mean": result.nll / result.scored_tokens, "scored_tokens": result.scored_tokens,
              "device": spec.device, "dtype": spec.dtype}
    if with_load:
        record["layers"] = [m.as_dict() for m in expert_load(model, ids, bench.window, bench.batch_size, progress)]
    if noise is None:
        return record
    noisy = []
    for seed in seeds:
        with bench.program(noise, seed):
            run = perplexity(model, ids, bench.window, spec.stride, bench.batch_size, progress=progress,
                             label=f"{noise.name} seed {seed}")
            noisy.append({"seed": seed, "ppl": run.ppl})
            if with_load:
                noisy[-1]["layers"] = [m.as_dict() for m in expert_load(model, ids, bench.window, bench.batch_size,
                                                                        progress)]
    values = torch.tensor([n["ppl"] for n in noisy], dtype=torch.float64)
    return record | {"noise": noise.model_dump(mode="json"), "seeds": list(seeds), "noisy": noisy,
                     "noisy_ppl_mean": float(values.mean()),
                     "noisy_ppl_std": float(values.std()) if len(values) > 1 else 0.0}


def profile(spec: RunSpec, noise: NoiseConfig | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Expert load per MoE layer, clean and, with `noise`, on chip `seed`, with routing fidelity."""
    bench = Workbench.load(spec, calibration=False)
    chip = (lambda: bench.program(noise, seed)) if noise is not None else None
    record = {**_inputs(bench), "window": bench.window,
              **profile_routing(bench.model, bench.ids, bench.window, bench.batch_size, chip=chip, progress=progress)}
    if noise is not None:
        record |= {"noise": noise.model_dump(mode="json"), "seed": seed}
    return record


def diagnose(spec: RunSpec, noise: NoiseConfig, seeds: list[int], tokens: int, progress: bool = True) -> dict:
    """The diagnosis (romer.diagnosis) on the first `tokens` of the calibration text, in whole windows:
    choices about calibration are made on calibration data, never the evaluation split."""
    from romer.diagnosis import diagnose as run_diagnosis
    from romer.evaluation.perplexity import require_one_window

    bench = Workbench.load(spec)
    usable = min(tokens, bench.calib_ids.numel())
    require_one_window(usable, bench.window)
    sequences = bench.calib_ids[: usable // bench.window * bench.window].view(-1, bench.window)
    record = run_diagnosis(bench.model, sequences, noise, seeds, bench.batch_size, progress)
    return {"model": spec.model, "model_path": str(bench.model.name_or_path), "calib_dataset": bench.calib_dataset,
            "tokens": int(sequences.numel()), "window": bench.window, **record}


def write_profile(record: dict, folder: str | Path) -> None:
    """`profile.json` and `heatmap.png` (clean, noisy and their difference) in `folder`."""
    from romer.report.heatmap import load_heatmap

    folder = Path(folder)
    write_text_atomic(folder / "profile.json", json.dumps(record, indent=2) + "\n")
    noisy = [layer["frequency"] for layer in record["noisy_layers"]] if "noisy_layers" in record else None
    title = f"{record['model']}: expert share per layer" + (
        f", {record['noise']['name']} seed {record['seed']}" if noisy else "")
    load_heatmap([layer["frequency"] for layer in record["layers"]], noisy, folder / "heatmap.png", title)


def write_diagnosis(record: dict, folder: str | Path) -> None:
    """`diagnosis.json` and `role_gaps.png` in `folder`."""
    from romer.report.plots import role_gaps

    folder = Path(folder)
    write_text_atomic(folder / "diagnosis.json", json.dumps(record, indent=1) + "\n")
    role_gaps(record, folder / "role_gaps.png")


def calibrate_chip(spec: RunSpec, config: CalibrationConfig, noise: NoiseConfig, seed: int, eval_tokens: int,
                   save: str | None = None, force: bool = False, status=None) -> dict:
    """Calibrate `spec.model` on chip (`noise`, `seed`) with the calibration split; test perplexity clean, noisy and
    calibrated on the first `eval_tokens` of the evaluation split (0: skip); optionally save the calibrated model."""
    from romer.calibration import calibrate_
    from romer.calibration.persist import save_calibrated

    bench = Workbench.load(spec)
    model = bench.model
    ids = bench.ids[:eval_tokens] if eval_tokens else None
    score = lambda label: perplexity(model, ids, bench.window, bench.window, bench.batch_size,  # noqa: E731
                                     progress=True, label=label).ppl
    record = {"model": spec.model, "method": config.method, "noise": noise.name, "seed": seed,
              "calib_data": bench.calib_dataset}
    if ids is not None:
        record["clean_ppl"] = score("clean")
    with bench.program(noise, seed) as chip:
        if ids is not None:
            record["noisy_ppl"] = score(f"{noise.name} seed {seed}")
        started = time.perf_counter()
        with status(f"calibrating ({config.method})") if status else nullcontext():
            calibration = calibrate_(model, config, bench.calib_ids, chip=chip)
        record["calibration_seconds"] = time.perf_counter() - started
        if ids is not None:
            record["calibrated_ppl"] = score(config.method)
            record["test"] = {**bench.dataset, "tokens": int(ids.numel()), "window": bench.window,
                              "stride": bench.window}
        record["calibration"] = {k: v for k, v in calibration.as_dict().items() if k != "report"}
        if save:
            record["saved"] = str(save_calibrated(model, bench.tokenizer, calibration, save, force=force))
        calibration.remove()
    return record


def stage_times(model: str, dtype: str, found, batch: int, device: str, trust_remote_code: bool) -> dict:
    """Each stage's seconds for one chip's `outlier-retune` (block-wise), priced at the rates measured on this kind of
    device (`romer/scale/timing.py`); nothing where no rates were measured."""
    from dataclasses import asdict

    from romer.models import DTYPES
    from romer.scale.memory import config_folder, meta_model
    from romer.scale.timing import Workload, load_rates, shape_of, stage_seconds

    rates = load_rates("cpu" if device == "cpu" else "cuda")
    if rates is None:
        return {}
    meta, _ = meta_model(config_folder(model, trust_remote_code), trust_remote_code)
    shape = shape_of(meta, torch.empty((), dtype=DTYPES[dtype]).element_size())
    load = Workload(step_tokens=batch * found.window)
    return {"stage_seconds": stage_seconds(shape, load, rates["seconds_per_unit"]), "workload": asdict(load),
            "rates": {k: rates[k] for k in ("machine", "commit", "fitted_on_layers")}}


def estimate(model: str, dtype: str, window: int | None, batch_size: int | None, device: str,
             memory_gib: float | None, trust_remote_code: bool) -> dict:
    """`romer estimate`'s record: the memory of a noisy run and of a retune fit, and what fits where."""
    from romer.scale.memory import estimate_memory, free_device_bytes

    on_accelerator = device != "cpu"
    found = estimate_memory(model, dtype, window, trust_remote_code, on_accelerator)
    if memory_gib is not None:
        available = int(memory_gib * 2**30)
    elif on_accelerator and not torch.cuda.is_available():
        available = 80 * 2**30
    else:
        available = free_device_bytes(device)
    fitted = found.fit_batch_size(available)
    batch = batch_size or max(fitted, 1)
    retune_batch = min(batch, 8)
    peak = found.device_bytes(batch)
    timing = stage_times(model, dtype, found, batch, device, trust_remote_code)
    return found.as_dict() | timing | {"available_bytes": available, "batch_size": batch, "fitted_batch_size": fitted,
                              "peak_bytes": peak, "fits": peak <= available, "retune_batch_size": retune_batch,
                              "retune_peak_bytes": found.retune_bytes(retune_batch),
                              "retune_peak_bytes_unchecked": found.retune_bytes(retune_batch, checkpointing=False),
                              "retune_host_bytes": found.retune_host_bytes(),
                              "blockwise_retune_peak_bytes": found.blockwise_retune_bytes(retune_batch),
                              "blockwise_retune_host_bytes": found.blockwise_host_bytes()}
