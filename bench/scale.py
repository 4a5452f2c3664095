"""Issue-7 benchmark: Ray (2 workers) vs local throughput, and the peak memory of a noisy run.

    python bench/scale.py [--seeds 0-3] [--memory-layers 4] [--skip-ray] [--skip-memory]

1. Throughput: the same romer-tiny campaign (cim-80c, methods none/rc/romer) run by the local
   back end (this process, torch on 2 threads) and by the Ray back end (a private local Ray
   instance, 2 workers of 1 CPU each), each into a fresh folder; wall time includes Ray's start
   and each worker's model load. Prints the ratio, and the largest relative perplexity difference.
2. Memory: in a fresh process per case, a synthetic OLMoE-shaped model (random weights, saved as
   safetensors) is loaded; the peak resident memory (Linux VmHWM, reset after loading) of a clean
   evaluation and of a noisy one (apply_noise_, evaluate, restore) is compared with the weights'
   size. On a GPU machine the same is measured with torch.cuda.max_memory_allocated.
   Goal: noisy-run peak ≤ 1.1 × the clean model's weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEASURE = r'''
import json, sys, torch, romer
from romer.evaluation import perplexity
folder, case, backup, device, bench = sys.argv[1:6]
sys.path.insert(0, bench)
from peak_memory import PeakMemory

memory = PeakMemory(device)
torch.set_num_threads(2)
base = memory.now() if device == "cpu" else 0
model, tok = romer.load_model(folder, device=device)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
loaded = memory.now()
ids = torch.randint(0, model.config.vocab_size, (1024,), generator=torch.Generator().manual_seed(0))
memory.reset()
if case == "clean":
    ppl = perplexity(model, ids, 256, 256, 2).ppl
else:
    handle = romer.apply_noise_(model, romer.NoiseConfig.preset("cim-80c"), seed=0, backup=backup)
    ppl = perplexity(model, ids, 256, 256, 2).ppl
    handle.restore()
print(json.dumps({"case": case, "backup": backup, "weights": weights, "base": base, "loaded": loaded,
                  "peak": memory.peak(), "ppl": ppl}))
'''


def throughput(seeds: str) -> None:
    import torch

    from romer.campaign import run_campaign, run_spec
    from romer.campaign.spec import parse_seeds
    from romer.scale.ray_backend import RayBackend

    spec = run_spec(noise=["cim-80c"], seeds=parse_seeds(seeds), methods=["none", "rc", "romer"], max_tokens=8192,
                    routing_tokens=2048, clean_cost=False, calibration={"calib_tokens": 4096})
    timings, results = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        torch.set_num_threads(2)
        started = time.perf_counter()
        results["local"] = run_campaign(spec, Path(scratch) / "local", progress=False)
        timings["local"] = time.perf_counter() - started
        started = time.perf_counter()
        results["ray"] = run_campaign(spec, Path(scratch) / "ray", progress=False, backend=RayBackend(workers=2))
        timings["ray"] = time.perf_counter() - started
    units = len(spec.seeds) * len(spec.methods) + 1
    worst = max(abs(a - b) / a for m in spec.methods
                for a, b in zip(results["local"]["chips"][0]["methods"][m]["ppl"],
                                results["ray"]["chips"][0]["methods"][m]["ppl"]))
    print(f"throughput, {units} units (romer-tiny, cim-80c, {len(spec.seeds)} seeds × none/rc/romer, 8,192 tokens):")
    for name, seconds in timings.items():
        print(f"  {name:5s} {seconds:6.1f} s   {units / seconds * 60:5.1f} units/min")
    print(f"  Ray (2 workers × 1 CPU) / local (1 process × 2 threads) throughput: {timings['local'] / timings['ray']:.2f}×"
          f"   largest relative perplexity difference {worst:.1e}")


def synthetic_model(folder: Path, layers: int) -> None:
    import torch
    from transformers import OlmoeConfig, OlmoeForCausalLM

    torch.manual_seed(0)
    config = OlmoeConfig(vocab_size=8192, hidden_size=512, intermediate_size=1024, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=8, num_experts=32, num_experts_per_tok=4,
                         max_position_embeddings=1024)
    OlmoeForCausalLM(config).save_pretrained(folder)
    borrow_tokenizer(folder)


def borrow_tokenizer(folder: Path) -> None:
    """romer-tiny's tokenizer beside random weights: `load_model` wants one, and the benchmarks feed token ids."""
    from romer.models import resolve_model_path

    tokenizer = resolve_model_path("romer-tiny")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer / name).exists():
            (folder / name).write_bytes((tokenizer / name).read_bytes())


def memory(layers: int) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        synthetic_model(folder, layers)
        rows = []
        # glibc's dynamic mmap threshold keeps freed programming scratch resident; a fixed threshold
        # shows what the noise itself holds (the allocator, not romer, decides the difference)
        fixed = {"MALLOC_MMAP_THRESHOLD_": str(2**20)}
        for case, backup, env in (("clean", "auto", {}), ("noisy", "auto", {}), ("noisy", "memory", {}),
                                  ("clean", "auto", fixed), ("noisy", "auto", fixed)):
            done = subprocess.run([sys.executable, "-c", MEASURE, str(folder), case, backup, device,
                                   str(Path(__file__).parent)],
                                  capture_output=True, text=True, check=True, env=os.environ | env)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"allocator": "fixed" if env else "default"})
    weights = rows[0]["weights"]
    print(f"memory on {device}: synthetic OLMoE-shaped model ({layers} layers, 32 experts), "
          f"{weights / 2**20:.0f} MiB of float32 weights, 2 windows of 256 tokens; resident after loading "
          f"{(rows[0]['loaded'] - rows[0]['base']) / 2**20:.0f} MiB")
    for row in rows:
        reference = next(r for r in rows if r["case"] == "clean" and r["allocator"] == row["allocator"])
        used, clean = row["peak"] - row["base"], reference["peak"] - reference["base"]
        extra = (row["peak"] - reference["peak"]) / weights
        label = f"{row['case']} (backup {row['backup']}{', fixed mmap threshold' if row['allocator'] == 'fixed' else ''})"
        print(f"  {label:50s} peak {used / 2**20:7.0f} MiB = {used / clean:.3f} × the clean run's peak; "
              f"above it: {extra:.3f} × weights")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-3")
    parser.add_argument("--memory-layers", type=int, default=4)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if not args.skip_memory:
        memory(args.memory_layers)
    if not args.skip_ray:
        throughput(args.seeds)


if __name__ == "__main__":
    main()
