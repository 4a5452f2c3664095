"""Every stage of one chip's `outlier-retune`, timed and peak-measured, at several depths of one shape (issue 42).

    python bench/stages.py --config bench/configs/olmoe-1b-7b --layers 1,2,4,8,16 --out runs/stages
    python bench/stages.py --report runs/stages      # the table, the fitted lines and docs/scale-stages.png

For each depth the random-weight checkpoint is written once (scripts/build_random_shape.py's builder, cached under
OUT/models), then a fresh process per depth measures, in order: load (romer.load_model, bfloat16), program one chip,
the noisy evaluation (tokens/s), `outlier-retune` calibrated on that chip with the settings below (its outlier split,
the clean twin's teacher, the planner, the block-wise fit and each block's seconds come from the calibration's own
report), restore, save of the calibrated model, and reload (load the saved folder, re-apply its calibration, program
the same chip seed): the reloaded model's logits are compared with the calibrated ones bit for bit. Peak memory per
stage is the process's resident high-water mark over that stage (VmHWM, reset before each stage); the whole
process's VmHWM is recorded too. Each depth's record goes to OUT/layers-N.json as soon as it is measured; a rerun
skips depths on record. The weights are random: times and memory are the shape's, perplexities mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from peak_memory import PeakMemory
from romer.atomic import write_text_atomic

STAGES = ("load", "program", "evaluate", "outliers", "teacher", "plan", "fit", "restore", "save", "reload")


def settings(args) -> dict:
    if args.method != "outlier-retune":
        return {"method": args.method, "calib_tokens": args.calib_tokens, "batch_size": args.batch,
                "window": args.window}
    return {"method": "outlier-retune", "retune_engine": "blockwise", "retune_plan": "blockwise",
            "retune_plan_tokens": args.plan_tokens, "outlier_attention": args.outlier_attention,
            "calib_tokens": args.calib_tokens, "retune_block_steps": args.block_steps,
            "retune_eval_every": max(1, args.block_steps // 2), "batch_size": args.batch, "window": args.window}


def measure(args, layers: int) -> dict:
    """One depth, in this process."""
    import romer
    from romer.calibration import calibrate_, calibration_config, load_calibration
    from romer.calibration.persist import save_calibrated
    from romer.evaluation import perplexity
    from romer.noise import apply_noise_, parse_noise_spec
    from romer.scale.shape import write_random_checkpoint

    torch.set_num_threads(args.threads)
    folder = (Path(args.model_folder) if args.model_folder else
              write_random_checkpoint(args.config, Path(args.out) / "models" / f"layers-{layers}", layers=layers,
                                      dtype=args.dtype))
    memory = PeakMemory("cpu")
    record: dict = {"layers": layers, "settings": settings(args), "stages": {}}

    def stage(name, work):
        memory.reset()
        started = time.perf_counter()
        result = work()
        record["stages"][name] = {"seconds": time.perf_counter() - started, "peak_bytes": memory.peak(),
                                  "resident_after": memory.now()}
        print(f"layers {layers}: {name} {record['stages'][name]['seconds']:.1f} s, peak "
              f"{record['stages'][name]['peak_bytes'] / 2**30:.2f} GiB", flush=True)
        # what is measured so far, kept if a later stage dies (an out-of-memory kill leaves no record otherwise)
        write_text_atomic(Path(args.out) / f"layers-{layers}.partial.json", json.dumps(record, indent=1))
        return result

    model, tokenizer = stage("load", lambda: romer.load_model(str(folder), dtype=args.dtype))
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.eval_tokens,), generator=torch.Generator().manual_seed(0))
    calib = torch.randint(0, vocab, (args.calib_tokens,), generator=torch.Generator().manual_seed(1))
    from dataclasses import asdict

    from romer.scale.timing import shape_of

    record["shape"] = asdict(shape_of(model, next(model.parameters()).element_size()))
    record["workload"] = {"eval_tokens": args.eval_tokens, "calib_tokens": args.calib_tokens,
                          "plan_tokens": args.plan_tokens, "block_steps": args.block_steps,
                          "step_tokens": args.batch * args.window}
    record["parameters"] = sum(p.numel() for p in model.parameters())
    record["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    chip = stage("program", lambda: apply_noise_(model, parse_noise_spec(args.noise), seed=0))
    record["on_chip_parameters"] = sum(chip.size(n) for n in chip.names())
    result = stage("evaluate", lambda: perplexity(model, ids, args.window, args.window, args.batch))
    record["tokens_per_s"] = args.eval_tokens / record["stages"]["evaluate"]["seconds"]
    config = calibration_config(**settings(args))
    calibration = stage("calibrate", lambda: calibrate_(model, config, calib, chip=chip))
    report = calibration.report
    if "retune" in report:
        fit = report["retune"]
        blocks = fit["blockwise"]["blocks"]
        record["stages"]["outliers"] = {"seconds": report["outliers"]["seconds"]}
        record["stages"]["teacher"] = {"seconds": report["clean_twin_seconds"]}
        record["stages"]["plan"] = {"seconds": fit["plan_seconds"]}
        record["stages"]["fit"] = {"seconds": fit["fit_seconds"], "block_seconds": [b["seconds"] for b in blocks]}
    record["digital_share"] = calibration.digital_share()
    with torch.no_grad():
        probe = ids[: args.window].view(1, -1)
        calibrated = model(input_ids=probe).logits
    saved = Path(args.out) / "saved" / f"layers-{layers}"
    stage("save", lambda: save_calibrated(model, tokenizer, calibration, saved, force=True))
    stage("restore", chip.restore)
    del model, chip, calibration
    import gc

    gc.collect()
    # the first model must be gone before the second loads: at 16 layers two copies do not fit 24 GiB
    record["resident_before_reload"] = memory.now()
    print(f"layers {layers}: resident before reload {memory.now() / 2**30:.2f} GiB", flush=True)

    def reload():
        again, _ = romer.load_model(str(saved), dtype=args.dtype)
        loaded = load_calibration(again, saved)
        handle = apply_noise_(again, parse_noise_spec(args.noise), seed=0, calibration=loaded)
        with torch.no_grad():
            return again, handle, again(input_ids=probe).logits

    _, handle, reloaded = stage("reload", reload)
    record["reload_bit_for_bit"] = bool(torch.equal(reloaded, calibrated))
    handle.restore()
    record["process_peak_bytes"] = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
    record["ppl_noisy_random_weights"] = result.ppl
    return record


def merge_run(out: Path, layers: int, run: Path, trace: Path | None, label: str = "outlier-retune") -> str:
    """Add to OUT/layers-N.json (a `--method romer` record of that depth: load, program, evaluate, save, restore and
    reload measured here) the fit's stages as `romer run` measured them at the same depth and settings: the
    outliers, teacher, plan and fit seconds from the run's record of `label`, and the calibration's peak resident set
    from a `bench/memory_trace.py` trace of that run (the highest sample inside calibrate_ while `label` ran)."""
    path = out / f"layers-{layers}.json"
    record = json.loads(path.read_text())
    unit = next(json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()
                if json.loads(line).get("method") == label and json.loads(line).get("kind") == "chip")
    calibration, fit = unit["calibration"], unit["calibration"]["retune"]
    record["stages"]["outliers"] = {"seconds": calibration["outliers_seconds"]}
    record["stages"]["teacher"] = {"seconds": calibration["clean_twin_seconds"]}
    record["stages"]["plan"] = {"seconds": fit["plan_seconds"]}
    record["stages"]["fit"] = {"seconds": fit["fit_seconds"], "block_seconds": fit.get("block_seconds", [])}
    record["fit_from"] = {"run": str(run), "label": label, "calib_seconds": unit["calib_seconds"],
                          "settings": calibration["config"], "digital_share": calibration["digital_share"]}
    if trace is not None:
        samples = json.loads(trace.read_text())["samples"]
        inside = [rss for _, rss, stack in samples if "pipeline.calibrate_" in stack]
        # the run calibrates romer first, then outlier-retune: the fit's samples are the last block of calibrate_
        blocks, current = [], []
        for _, rss, stack in samples:
            if "pipeline.calibrate_" in stack:
                current.append(rss)
            elif current:
                blocks.append(current)
                current = []
        if current:
            blocks.append(current)
        if blocks:
            record["stages"]["calibrate"] = {"seconds": unit["calib_seconds"], "peak_bytes": max(blocks[-1]) * 1024}
        record["run_process_peak_bytes"] = json.loads(trace.read_text())["vmhwm_kib"] * 1024
        record["trace"] = {"file": str(trace), "calibrate_samples": len(inside)}
    write_text_atomic(path, json.dumps(record, indent=1))
    return f"merged {label} of {run} into {path}"


def report(out: Path) -> str:
    import numpy as np

    records = sorted((json.loads(p.read_text()) for p in out.glob("layers-*.json") if "partial" not in p.name),
                     key=lambda r: r["layers"])
    if not records:
        return f"no records in {out}"
    gib = 2**30
    shown = STAGES[:3] + ("calibrate",) + STAGES[3:]
    lines = ["| layers | parameters | " + " | ".join(shown) + " | process peak | reload bit for bit |",
             "|---" * (len(shown) + 4) + "|"]
    for r in records:
        cells = [("—" if s not in r["stages"] else f"{r['stages'][s]['seconds']:.1f} s"
                  + (f" / {r['stages'][s]['peak_bytes'] / gib:.1f} GiB" if "peak_bytes" in r["stages"][s] else ""))
                 for s in shown]
        lines.append(f"| {r['layers']} | {r['parameters'] / 1e9:.2f} B | " + " | ".join(cells)
                     + f" | {process_peak(r) / gib:.2f} GiB | {r['reload_bit_for_bit']} |")
    if len(records) > 1:
        lines += ["", "Fitted lines (least squares over the measured depths), seconds = a + b × layers:"]
        for s in STAGES:
            points = [(r["layers"], r["stages"][s]["seconds"]) for r in records if s in r["stages"]]
            if len(points) > 1:
                b, a = np.polyfit(*zip(*points), 1)
                lines.append(f"- {s}: {a:.1f} + {b:.2f} × layers (depths {', '.join(str(p[0]) for p in points)})")
        b, a = np.polyfit([r["layers"] for r in records], [process_peak(r) / gib for r in records], 1)
        lines.append(f"- process peak: {a:.2f} + {b:.3f} × layers GiB")
        plot(records, out)
    return "\n".join(lines)


def process_peak(record: dict) -> int:
    """The highest resident set of the depth's measurements (a merged run's peak counts)."""
    return max(record["process_peak_bytes"], record.get("run_process_peak_bytes", 0))


def rates(out: Path, depths: list[int], target: str | None) -> str:
    """Each stage's rate fitted on `depths`, and its prediction of every measured depth against the measurement."""
    import subprocess

    from romer.scale.timing import STAGES as PRICED, Shape, Workload, fit_rates, stage_seconds

    records = sorted((json.loads(p.read_text()) for p in out.glob("layers-*.json") if "partial" not in p.name),
                     key=lambda r: r["layers"])
    parsed = [(Shape(**r["shape"]), Workload(**r["workload"]),
               {s: r["stages"][s]["seconds"] for s in PRICED if s in r["stages"]}) for r in records]
    fitted = fit_rates([p for p, r in zip(parsed, records) if r["layers"] in depths])
    lines = [f"Rates fitted on depths {depths}; predicted / measured seconds (ratio):",
             "| layers | " + " | ".join(PRICED) + " |", "|---" * (len(PRICED) + 1) + "|"]
    for (shape, load, seconds), record in zip(parsed, records):
        predicted = stage_seconds(shape, load, fitted)
        lines.append(f"| {record['layers']} | " + " | ".join(
            f"{predicted[s]:.1f} / {seconds[s]:.1f} ({predicted[s] / seconds[s]:.2f})" if seconds.get(s) else "—"
            for s in PRICED) + " |")
    if target:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        write_text_atomic(Path(target), json.dumps({"device": "cpu", "machine": "2-core CPU, 24 GiB (the dev and CI "
                                                    "machine), torch on 2 threads", "commit": commit,
                                                    "fitted_on_layers": depths, "source": str(out),
                                                    "seconds_per_unit": fitted}, indent=1))
        lines.append(f"wrote {target}")
    return "\n".join(lines)


def plot(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = [r["layers"] for r in records]
    figure, (times, peaks) = plt.subplots(1, 2, figsize=(11, 4))
    for s in STAGES:
        points = [(r["layers"], r["stages"][s]["seconds"]) for r in records if s in r["stages"]]
        times.plot(*zip(*points), marker="o", label=s)
    times.set(xlabel="decoder layers (OLMoE-1B-7B's width)", ylabel="seconds", title="time per stage")
    times.legend(fontsize=7, ncol=2)
    peaks.plot(depth, [process_peak(r) / 2**30 for r in records], marker="o", label="process peak")
    peaks.plot(depth, [r["weights_bytes"] / 2**30 for r in records], marker="s", label="weights")
    peaks.axhline(22, color="grey", linestyle="--", label="22 GiB goal")
    peaks.set(xlabel="decoder layers", ylabel="GiB", title="resident memory (VmHWM)")
    peaks.legend(fontsize=7)
    figure.tight_layout()
    target = Path(__file__).resolve().parents[1] / "docs" / "scale-stages.png"
    figure.savefig(target, dpi=120)
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="bench/configs/olmoe-1b-7b")
    parser.add_argument("--layers", default="1,2,4,8,16")
    parser.add_argument("--out", default="runs/stages")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--noise", default="cim-80c")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--eval-tokens", type=int, default=2048)
    parser.add_argument("--calib-tokens", type=int, default=8192)
    parser.add_argument("--plan-tokens", type=int, default=2048)
    parser.add_argument("--block-steps", type=int, default=20)
    parser.add_argument("--outlier-attention", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--method", default="outlier-retune",
                        help="the calibration between evaluate and save (another method than outlier-retune records "
                             "no outliers/teacher/plan/fit stages: e.g. romer, to time save and reload at a depth "
                             "where the fit is measured by romer run)")
    parser.add_argument("--model-folder", default=None, help="an existing checkpoint of this depth (not rebuilt)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: one depth
    parser.add_argument("--report", default=None, help="print the table of a results folder and draw the plot")
    parser.add_argument("--rates-from", default=None,
                        help="with --report: fit each stage's rate on these depths (e.g. 1,2,4,8), print the "
                             "prediction of every depth beside its measurement, and write the rates (--rates-out)")
    parser.add_argument("--rates-out", default=None, help="where the fitted rates go (romer/scale/rates/cpu.json)")
    parser.add_argument("--merge-run", default=None, help="a romer run folder at one depth (--merge-layers) whose "
                                                          "outlier-retune record completes that depth's record")
    parser.add_argument("--merge-layers", type=int, default=16)
    parser.add_argument("--merge-trace", default=None, help="that run's bench/memory_trace.py samples (its peaks)")
    args = parser.parse_args()
    if args.merge_run:
        print(merge_run(Path(args.out), args.merge_layers, Path(args.merge_run),
                        Path(args.merge_trace) if args.merge_trace else None))
        return
    if args.report:
        print(report(Path(args.report)))
        if args.rates_from:
            print(rates(Path(args.report), [int(x) for x in args.rates_from.split(",")], args.rates_out))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.one is not None:
        write_text_atomic(out / f"layers-{args.one}.json", json.dumps(measure(args, args.one), indent=1))
        return
    for layers in (int(x) for x in args.layers.split(",")):
        if (out / f"layers-{layers}.json").exists():
            continue
        child = [sys.executable, __file__, *sys.argv[1:], "--one", str(layers)]
        subprocess.run(child, check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    print(report(out))


if __name__ == "__main__":
    main()
