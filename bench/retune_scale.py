"""How `retune`'s fit grows with the model: block-wise against end to end, side by side in one run (issue 31).

    python bench/retune_scale.py [--device cpu|cuda] [--models tiny,twin,wide-deep] [--out runs/retune-scale.jsonl]
    python bench/retune_scale.py --report runs/retune-scale.jsonl [--plot docs/retune-scale.png]

Per (model, engine), on chip seed 0 of `cim-80c`, with the method's default calibration (32,768 stdlib calibration
tokens, a quarter held out): the wall seconds of `calibrate_` (plan, clean-twin visit and fit), the peak memory (on
CUDA `torch.cuda.max_memory_allocated` of that calibration alone; on the CPU the peak resident set of a fresh process
that does only this), and the held-out KL(clean ‖ chip) before and after the fit. Each (model, engine) runs in its own
process, so neither peak includes the other's.

Models:
- `tiny`: romer-tiny (4 layers, hidden 192, 32 experts top-4, 4.2 M on-chip weights);
- `twin`: its 64-expert twin (`bench/split_experts.py`: the same function, every expert split in two);
- `wide-deep`: romer-tiny's configuration 2× deeper and 2× wider (8 layers, hidden 384, 12 heads, expert size 96),
  weights drawn by transformers' own initialiser from torch seed 0 (normal, std 0.02): a model with no function, for
  time and memory only (its KL figures mean nothing);
- `wider-deeper`: 4× deeper and 4× wider (16 layers, hidden 768, 24 heads, expert size 192, 64 experts top-8), drawn
  the same way; for an accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

MODELS = ("tiny", "twin", "wide-deep", "wider-deeper")
ENGINES = ("end_to_end", "blockwise")


def build(name: str):
    from romer.models import load_model

    model, tokenizer = load_model("romer-tiny")
    if name == "tiny":
        return model, tokenizer
    if name == "twin":
        sys.path.insert(0, str(Path(__file__).parent))
        from split_experts import split_experts

        return split_experts(model), tokenizer
    scale, extra = {"wide-deep": (2, {}), "wider-deeper": (4, {"num_experts": 64, "num_experts_per_tok": 8})}[name]
    config = model.config.__class__(**(model.config.to_dict() | {
        "num_hidden_layers": 4 * scale, "hidden_size": 192 * scale, "num_attention_heads": 6 * scale,
        "num_key_value_heads": 6 * scale, "intermediate_size": 48 * scale} | extra))
    torch.manual_seed(0)
    return model.__class__(config).eval(), tokenizer


def measure(name: str, engine: str, device: str) -> dict:
    from romer import NoiseConfig, apply_noise_, calibrate_
    from romer.calibration import CalibrationConfig
    from romer.data import load_corpus
    from romer.evaluation import tokenize_stream

    model, tokenizer = build(name)
    model = model.to(device)
    calib = tokenize_stream(tokenizer, load_corpus("stdlib", "calib").text)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        started = time.perf_counter()
        calibration = calibrate_(model, CalibrationConfig(method="retune", retune_engine=engine), calib)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        report = calibration.report["retune"]
        peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        record = {"model": name, "engine": engine, "device": device, "torch": torch.__version__,
                  "parameters": sum(p.numel() for p in model.parameters()), "layers": model.config.num_hidden_layers,
                  "seconds": seconds, "fit_seconds": report["fit_seconds"], "peak_bytes": peak,
                  "weights_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
                  "peak_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "process peak RSS",
                  "holdout_kl_before": report["holdout_kl_before"], "holdout_kl_after": report["holdout_kl_after"],
                  "digital_share": calibration.digital_share()}
        if device.startswith("cuda"):
            record["resident_before_bytes"] = before
        calibration.remove()
    return record


def report(path: Path, plot: Path | None) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by = {(r["model"], r["engine"], r["device"]): r for r in rows}
    print("| model | device | parameters | end-to-end s | block-wise s | time ratio | end-to-end peak GiB | "
          "block-wise peak GiB | KL after, e2e / block-wise |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, engine, device), e2e in sorted(by.items()):
        if engine != "end_to_end" or (model, "blockwise", device) not in by:
            continue
        block = by[(model, "blockwise", device)]
        print(f"| {model} | {device} | {e2e['parameters'] / 1e6:.1f} M | {e2e['seconds']:.1f} | {block['seconds']:.1f} "
              f"| {e2e['seconds'] / block['seconds']:.2f}× | {e2e['peak_bytes'] / 2**30:.2f} | "
              f"{block['peak_bytes'] / 2**30:.2f} | {e2e['holdout_kl_after']:.4f} / {block['holdout_kl_after']:.4f} |")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        for device in sorted({r["device"] for r in rows}):
            for engine, style in zip(ENGINES, ("o-", "s--")):
                points = sorted((r["parameters"], r["seconds"], r["peak_bytes"]) for r in rows
                                if r["engine"] == engine and r["device"] == device)
                if points:
                    x = [p[0] / 1e6 for p in points]
                    left.plot(x, [p[1] for p in points], style, label=f"{engine}, {device}")
                    right.plot(x, [p[2] / 2**30 for p in points], style, label=f"{engine}, {device}")
        for axis, label in ((left, "seconds per chip (calibration)"), (right, "peak memory, GiB")):
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("model parameters, millions")
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        left.legend(fontsize=8)
        figure.suptitle("retune: block-wise against end to end (cim-80c, chip 0, 32,768 calibration tokens)")
        figure.tight_layout()
        plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(plot, dpi=120)
        print(f"plot: {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="tiny,twin,wide-deep")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--out", default="runs/retune-scale.jsonl")
    parser.add_argument("--report", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        report(Path(args.report), Path(args.plot) if args.plot else None)
        return
    if args.one:
        print(json.dumps(measure(*args.one, args.device)))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["engine"], r["device"]) for r in
            (json.loads(line) for line in (out.read_text().splitlines() if out.exists() else []) if line.strip())}
    for model in args.models.split(","):
        for engine in args.engines.split(","):
            if (model, engine, args.device) in done:
                continue
            result = subprocess.run([sys.executable, __file__, "--device", args.device, "--one", model, engine],
                                    capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
            if result.returncode != 0:
                print(f"{model} {engine}: failed\n{result.stderr[-3000:]}", file=sys.stderr)
                continue
            line = result.stdout.strip().splitlines()[-1]
            with out.open("a") as handle:
                handle.write(line + "\n")
            record = json.loads(line)
            print(f"{model:13s} {engine:10s} {record['seconds']:7.1f} s  peak {record['peak_bytes'] / 2**30:6.2f} GiB  "
                  f"KL {record['holdout_kl_before']:.4f} → {record['holdout_kl_after']:.4f}", flush=True)
    report(out, Path(args.plot) if args.plot else None)


if __name__ == "__main__":
    main()
