"""One-shot measurements on the work bench: `eval` (perplexity clean and per chip seed), `profile` (expert
load and routing fidelity) and `diagnose` (where the damage sits, what router calibration can reach).
Each returns the JSON record its command prints; the command line only parses and prints."""

from __future__ import annotations

import torch

from romer.campaign.run import Workbench
from romer.campaign.spec import RunSpec
from romer.evaluation import expert_load, perplexity, profile_routing
from romer.noise import NoiseConfig, apply_noise_


def _inputs(bench: Workbench) -> dict:
    return {"model": bench.spec.model, "model_path": str(bench.model.name_or_path), "dataset": bench.dataset}


def evaluate(spec: RunSpec, noise: NoiseConfig | None = None, seeds: list[int] = (), with_load: bool = False,
             progress: bool = True) -> dict:
    """Perplexity clean and, with `noise`, on each chip seed (windows of spec.window every spec.stride, or half)."""
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
        with apply_noise_(model, noise, seed):
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
    chip = (lambda: apply_noise_(bench.model, noise, seed)) if noise is not None else None
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
