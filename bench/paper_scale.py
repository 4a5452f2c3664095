"""Issue-15 benchmark: one of the paper's model shapes, random weights, on one device, measured part by part.

    python bench/paper_scale.py --config bench/configs/olmoe-1b-7b [--out runs/paper-scale] [--save-load]
    python bench/paper_scale.py --config bench/configs/olmoe-1b-7b --device cpu --dtype float32 --layers 1 \\
        --window 128 --batch 2 --eval-tokens 512 --calib-tokens 1024 --retune-steps 2   # the harness, on a laptop

The shape comes from a config.json in bench/configs (no hub, no weights); the model is built with
transformers' own random initialisation, so perplexities mean nothing and times and memory are the
paper's. Token ids are drawn uniformly (seeded), which costs what text costs. Parts:

  build      the model on the device in --dtype; with --save-load it is written as safetensors and
             read back with romer.load_model (the load time; the page cache is dropped first where
             the machine lets us, and the record says whether it could)
  run        romer estimate against the measured peak (torch.cuda.max_memory_allocated on CUDA, the
             resident high-water mark on a CPU) of a clean and a noisy evaluation of --eval-tokens at
             --batch windows; the time to program one chip (--noise, weights mode) and restore it;
             evaluation tokens/s clean, on the weights-mode chip, and on the analog-mode chip (one batch)
  calibrate  for each of --methods: calibrate_ on that chip (seed 0), its time and peak memory, and the
             evaluation afterwards; retune runs --retune-steps Adam steps and its fit is scaled to the
             default 200 in the table
  table      the wall time of the paper's table (--chips × --seeds chip instances, methods none and
             --table-methods, --test-tokens of test text each, as `romer run` does it), extrapolated from
             the measured parts

Each part's record goes to OUT/<shape>.json as soon as it is measured; a rerun skips the parts there
(--force measures again). --layers N keeps the first N decoder layers: a check of the harness, whose
figures are not the paper's (the record says so).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from peak_memory import PeakMemory
from romer.atomic import write_text_atomic
from romer.calibration.config import RomerConfig
from romer.errors import RomerError

DEFAULT_RETUNE_STEPS = RomerConfig.model_fields["retune_steps"].default
GOALS = {"noisy eval ≤ 1.05× clean": ("weights_slowdown", 1.05), "programming one chip ≤ 10 s": ("program_s", 10.0),
         "analog ≤ 3× clean": ("analog_slowdown", 3.0), "noisy peak ≤ 1.1× clean peak": ("peak_ratio", 1.1),
         "paper table ≤ 1 h": ("table_hours", 1.0)}


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(device: str, work):
    sync(device)
    started = time.perf_counter()
    result = work()
    sync(device)
    return result, time.perf_counter() - started


class Record:
    """OUT/<shape>.json: the parts measured so far, rewritten atomically after each."""

    def __init__(self, path: Path, settings: dict, force: bool):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() and not force else {}
        if self.data and self.data.get("settings") != settings:
            raise RomerError(f"{path} was measured with other settings; pass --force to measure again, or another --out")
        self.data["settings"] = settings

    def has(self, part: str) -> bool:
        return part in self.data

    def save(self, part: str, values: dict) -> None:
        self.data[part] = values
        write_text_atomic(self.path, json.dumps(self.data, indent=1))


def shape_config(args):
    from romer.models import load_config

    config = load_config(Path(args.config))
    if args.layers:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(args.config, num_hidden_layers=args.layers)
    return config


def drop_page_cache() -> bool:
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3")
        return True
    except OSError:
        return False


def build(args, config, folder: Path, record: Record):
    """The random-weight model on the device (and, with --save-load, the time to load it as a user would)."""
    from transformers import AutoModelForCausalLM

    import romer
    from romer.models import DTYPES
    from romer.moe import require_moe
    from scale import borrow_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    torch.manual_seed(0)
    started = time.perf_counter()
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[args.dtype])
    sync(args.device)
    values = {"built_s": time.perf_counter() - started}
    if args.save_load:
        model.save_pretrained(folder)
        borrow_tokenizer(folder)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        values["cold_cache"] = drop_page_cache()
        (model, _), values["load_s"] = timed(args.device, lambda: romer.load_model(str(folder), device=args.device,
                                                                                   dtype=args.dtype))
        values["checkpoint_bytes"] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    model.eval()
    require_moe(model, args.config)
    values["parameters"] = sum(p.numel() for p in model.parameters())
    values["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    record.save("build", values)
    return model


def token_ids(vocab: int, count: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (count,), generator=torch.Generator().manual_seed(seed))


def evaluate(args, model, ids: torch.Tensor) -> tuple[float, float]:
    """Perplexity and seconds of disjoint --window windows, --batch at a time."""
    from romer.evaluation import perplexity

    result, seconds = timed(args.device, lambda: perplexity(model, ids, args.window, args.window, args.batch))
    return result.ppl, seconds


def run_part(args, model, folder: Path, record: Record) -> None:
    from romer.noise import NoiseConfig, apply_noise_, parse_noise_spec
    from romer.scale.memory import estimate_memory

    memory = PeakMemory(args.device)
    vocab = model.config.get_text_config().vocab_size
    ids = token_ids(vocab, args.eval_tokens, 0)
    one_batch = ids[: args.window * args.batch]
    estimate = estimate_memory(str(folder), args.dtype, args.window, on_accelerator=memory.cuda)
    evaluate(args, model, ids[: args.window])  # warm-up: kernels, allocator pools
    values = {"estimate": estimate.as_dict(), "estimate_device_bytes": estimate.device_bytes(args.batch),
              "eval_tokens": ids.numel()}
    before = memory.now()
    memory.reset()
    values["clean_ppl"], values["clean_s"] = evaluate(args, model, ids)
    values["clean_peak"] = memory.peak()
    values["clean_batch_s"] = min(evaluate(args, model, one_batch)[1] for _ in range(args.repeats))
    values["experts_implementation"] = getattr(model.config, "_experts_implementation", None) or "eager"
    if values["experts_implementation"] != "eager":  # a chip with per-forward effects runs the eager experts
        model.set_experts_implementation("eager")
        values["clean_eager_s"] = evaluate(args, model, ids)[1]
        model.set_experts_implementation(values["experts_implementation"])

    chip = parse_noise_spec(args.noise)
    programs, restores = [], []
    for repeat in range(args.repeats):
        memory.reset()
        handle, seconds = timed(args.device, lambda: apply_noise_(model, chip, seed=0))
        programs.append(seconds)
        if repeat == 0:
            values["noisy_ppl"], values["noisy_s"] = evaluate(args, model, ids)
            values["noisy_peak"] = memory.peak()
            values["on_chip_parameters"] = sum(handle.size(name) for name in handle.names())
            values["backup"] = handle.backup_kind()
        restores.append(timed(args.device, handle.restore)[1])
    values["program_s"], values["restore_s"] = statistics.median(programs), statistics.median(restores)
    values["held_after_restore"] = memory.now() - before

    analog = NoiseConfig(**(chip.model_dump() | {"mode": "analog"}))
    handle, values["analog_program_s"] = timed(args.device, lambda: apply_noise_(model, analog, seed=0))
    memory.reset()
    values["analog_batch_s"] = evaluate(args, model, one_batch)[1]
    values["analog_peak"] = memory.peak()
    handle.restore()

    values["clean_tokens_per_s"] = ids.numel() / values["clean_s"]
    values["noisy_tokens_per_s"] = ids.numel() / values["noisy_s"]
    values["weights_slowdown"] = values["noisy_s"] / values["clean_s"]
    values["analog_slowdown"] = values["analog_batch_s"] / values["clean_batch_s"]
    values["peak_ratio"] = values["noisy_peak"] / values["clean_peak"]
    record.save("run", values)


def calibrate_part(args, model, folder: Path, method: str, record: Record) -> None:
    import romer
    from romer.calibration.config import romer_config
    from romer.noise import apply_noise_, parse_noise_spec

    memory = PeakMemory(args.device)
    vocab = model.config.get_text_config().vocab_size
    ids, calib = token_ids(vocab, args.eval_tokens, 0), token_ids(vocab, args.calib_tokens, 1)
    settings = {"method": method, "calib_tokens": args.calib_tokens, "window": args.window,
                "batch_size": args.calib_batch or args.batch}
    if method == "retune":
        settings |= {"retune_steps": args.retune_steps, "retune_eval_every": min(25, args.retune_steps)}
    if method in args.method_settings:  # a labelled variant: label=method@key=value@...
        variant = args.method_settings[method]
        settings |= variant.settings | {"method": variant.method}
    config = romer_config(**settings)
    with apply_noise_(model, parse_noise_spec(args.noise), seed=0) as chip:
        memory.reset()
        calibration, seconds = timed(args.device, lambda: romer.calibrate_(model, config, calib, chip=chip))
        values = {"calibrate_s": seconds, "peak": memory.peak(), "settings": settings}
        values["ppl"], values["eval_s"] = evaluate(args, model, ids)
        if method == "retune":
            fit = calibration.report["retune"]
            values |= {k: fit[k] for k in ("seconds_before_fit", "fit_seconds", "steps", "checkpointing",
                                           "parameters_added", "holdout_kl_before", "holdout_kl_after")}
            values["calibrate_s_at_default_steps"] = (seconds - fit["fit_seconds"]
                                                      + fit["fit_seconds"] * DEFAULT_RETUNE_STEPS / fit["steps"])
            from romer.scale.memory import estimate_memory

            estimate = estimate_memory(str(folder), args.dtype, args.window, on_accelerator=memory.cuda)
            values["estimate_bytes"] = estimate.retune_bytes(settings["batch_size"], checkpointing=fit["checkpointing"])
        calibration.remove()
    record.save(f"calibrate:{method}", values)


def table_part(args, record: Record) -> None:
    """`romer run`'s work for the paper's table, from the measured parts (trials.py: clean, the clean-cost
    calibrations, then per chip instance: program, each method calibrated and evaluated with telemetry)."""
    run = record.data["run"]
    clean_eval = args.test_tokens / run["clean_tokens_per_s"]
    noisy_eval = args.test_tokens / run["noisy_tokens_per_s"]
    telemetry = args.routing_tokens / run["noisy_tokens_per_s"]
    calibrations = {m: record.data[f"calibrate:{m}"].get("calibrate_s_at_default_steps",
                                                         record.data[f"calibrate:{m}"]["calibrate_s"])
                    for m in args.table_methods}
    per_chip = run["program_s"] + run["restore_s"] + (1 + len(calibrations)) * (noisy_eval + telemetry) \
        + sum(calibrations.values())
    clean_cost = sum(calibrations.values()) + len(calibrations) * clean_eval
    total = clean_eval + telemetry + clean_cost + args.chips * args.seeds * per_chip
    record.save("table", {"test_tokens": args.test_tokens, "chips": args.chips, "seeds": args.seeds,
                          "methods": ["none", *args.table_methods], "calibrate_s": calibrations, "per_chip_s": per_chip,
                          "total_s": total, "table_hours": total / 3600})


def report(record: Record, device: str) -> str:
    data = record.data
    gib = 2**30
    lines = [f"## {data['settings']['config']} on {device}"
             + (f" (first {data['settings']['layers']} layers only: not the paper's shape)"
                if data["settings"]["layers"] else "")]
    if "build" in data:
        b = data["build"]
        load = (f", loaded with romer.load_model in {b['load_s']:.1f} s from "
                f"{b['checkpoint_bytes'] / gib:.2f} GiB of safetensors ({'cold' if b['cold_cache'] else 'warm'} "
                "page cache)") if "load_s" in b else ""
        lines.append(f"- {b['parameters'] / 1e9:.3f} B parameters, {b['weights_bytes'] / gib:.2f} GiB of weights; "
                     f"built in {b['built_s']:.1f} s{load}")
    if "run" in data:
        r = data["run"]
        lines += [f"- peak memory: clean {r['clean_peak'] / gib:.2f} GiB, noisy {r['noisy_peak'] / gib:.2f} GiB "
                  f"({r['peak_ratio']:.3f}×); romer estimate {r['estimate_device_bytes'] / gib:.2f} GiB "
                  f"({r['estimate_device_bytes'] / r['noisy_peak']:.2f}× the noisy peak); analog one batch "
                  f"{r['analog_peak'] / gib:.2f} GiB; held after restore {r['held_after_restore'] / 2**20:+.0f} MiB",
                  f"- programming one chip: {r['program_s']:.2f} s (restore {r['restore_s']:.2f} s), analog mode "
                  f"{r['analog_program_s']:.2f} s; {r['on_chip_parameters'] / 1e9:.3f} B on-chip weights",
                  f"- evaluation: clean {r['clean_tokens_per_s']:,.0f} tokens/s ({r['experts_implementation']} "
                  f"experts), weights-mode chip {r['noisy_tokens_per_s']:,.0f} tokens/s ({r['weights_slowdown']:.3f}×), "
                  f"analog-mode chip {r['analog_slowdown']:.2f}× clean (one batch)"
                  + (f"; clean with the eager experts a chip runs: {r['eval_tokens'] / r['clean_eager_s']:,.0f} "
                     f"tokens/s" if "clean_eager_s" in r else "")]
    for key, c in data.items():
        if key.startswith("calibrate:"):
            extra = (f", fit {c['steps']} steps in {c['fit_seconds']:.1f} s after {c['seconds_before_fit']:.1f} s "
                     f"of teacher and start → {c['calibrate_s_at_default_steps']:.0f} s at {DEFAULT_RETUNE_STEPS} "
                     f"steps; estimate {c['estimate_bytes'] / gib:.2f} GiB") if "fit_seconds" in c else ""
            lines.append(f"- calibrate_ {key.split(':')[1]}: {c['calibrate_s']:.1f} s, peak {c['peak'] / gib:.2f} GiB"
                         + extra)
    if "table" in data:
        t = data["table"]
        lines.append(f"- the paper's table ({t['chips']} chips × {t['seeds']} seeds, {', '.join(t['methods'])}, "
                     f"{t['test_tokens']:,} test tokens each): {t['total_s'] / 60:.1f} min extrapolated "
                     f"({t['per_chip_s']:.0f} s per chip instance)")
    flat = {**data.get("run", {}), **data.get("table", {})}
    for goal, (key, limit) in GOALS.items():
        if key in flat:
            lines.append(f"  - goal {goal}: {flat[key]:.3g} → {'met' if flat[key] <= limit else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a folder with config.json (bench/configs/...)")
    parser.add_argument("--out", default="runs/paper-scale")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--layers", type=int, default=0, help="keep the first N decoder layers (0: all)")
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--calib-batch", type=int, default=0,
                        help="sequences per calibration step and pass (0: --batch); retune's fit of the Qwen shape "
                             "at 8 is estimated at 70 GiB, at 4 at 55 GiB (romer estimate)")
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--calib-tokens", type=int, default=8192)
    parser.add_argument("--noise", default="cim-80c")
    parser.add_argument("--methods", default="er,rc,romer,tuned,retune",
                        help="methods, or labelled variants as in romer run (e.g. or=outlier-retune@retune_engine="
                             "blockwise@retune_plan=blockwise)")
    parser.add_argument("--retune-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="programming and one-batch timings: median of N")
    parser.add_argument("--parts", default="run,calibrate,table")
    parser.add_argument("--test-tokens", type=int, default=300_000,
                        help="test tokens per evaluation in the extrapolated table (WikiText-2 raw test is about "
                             "300 k tokens; count it with the model's own tokenizer)")
    parser.add_argument("--table-methods", default="er,rc,romer,tuned",
                        help="the methods besides none in the extrapolated table (scripts/paper_olmoe.sh's)")
    parser.add_argument("--chips", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--routing-tokens", type=int, default=16384)
    parser.add_argument("--save-load", action="store_true", help="time romer.load_model of the weights on disk")
    parser.add_argument("--keep", action="store_true", help="keep the saved checkpoint (for scripts/paper_olmoe.sh)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    from romer.campaign.variants import parse_variant

    variants = [parse_variant(m) for m in args.methods.split(",") if m and m != "none"]
    args.methods = [v.label for v in variants]
    args.method_settings = {v.label: v for v in variants if v.label != v.method or v.settings}
    args.table_methods = [m for m in args.table_methods.split(",") if m and m != "none"]
    parts = set(args.parts.split(","))
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    name = Path(args.config).name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("config", "device", "dtype", "layers", "window", "batch", "calib_batch",
                                              "eval_tokens", "calib_tokens", "noise", "retune_steps")}
    record = Record(out / f"{name}.json", settings, args.force)
    pending = ["run"] * ("run" in parts and not record.has("run")) + [
        f"calibrate:{m}" for m in args.methods if "calibrate" in parts and not record.has(f"calibrate:{m}")]
    device_name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "CPU"
    if pending or (args.save_load and "load_s" not in record.data.get("build", {})):
        folder = out / f"{name}-model"
        model = build(args, shape_config(args), folder, record)
        for part in pending:
            started = time.perf_counter()
            if part == "run":
                run_part(args, model, folder, record)
            else:
                calibrate_part(args, model, folder, part.split(":")[1], record)
            print(f"{part}: measured in {time.perf_counter() - started:.0f} s", flush=True)
        if args.save_load and not args.keep:
            for path in folder.glob("*.safetensors"):
                path.unlink()
    if "table" in parts and record.has("run") and all(record.has(f"calibrate:{m}") for m in args.table_methods):
        table_part(args, record)
    print(report(record, device_name))
    print(f"wrote {record.path}")


if __name__ == "__main__":
    try:
        main()
    except RomerError as error:
        sys.exit(f"error: {error}")
