"""AHWA-LoRA as published, on chips it never saw, at 1×, 0.8× and 1.2× the noise it was trained under (issue 32).

    python bench/ahwa_lora.py [--noise cim-80c] [--seeds 0-4] [--strengths 1,0.8,1.2] [--train-noise chip]
                              [--loss task] [--methods none,ahwa-lora,ahwa-lora-retune] [--out runs/bench-ahwa]
    python bench/ahwa_lora.py --report runs/bench-ahwa
    python bench/ahwa_lora.py --count romer-tiny,bench/configs/olmoe-1b-7b,bench/configs/qwen1.5-moe-a2.7b,bench/configs/deepseek-moe-16b

The adapters are trained once, on fresh draws of `--noise` at 1× (`--train-noise chip`) or of another preset
(`ahwa-injection`: the authors' injected noise), and cached on disk (`lora_cache`); every chip seed at every
strength then only installs them (`ahwa-lora`), or installs them and runs retune's end-to-end fit of them for
`lora_chip_steps` steps on that chip (`ahwa-lora-retune`). The chips evaluated (`--seeds`) are never the training
or check chips. One line per (strength, seed, method) in results.jsonl: the bench resumes. The report gives the
recovery of the noisy gap per strength, mean ± std over seeds, with paired p-values against `none`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from romer.calibration import calibrate_, calibration_config
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds, run_spec
from romer.evaluation import perplexity
from romer.evaluation.statistics import paired_test
from romer.noise import apply_noise_, parse_noise_spec
from calibration_args import bench_parser, parse_bench
from jsonl_log import read_log, results_log


def run(args) -> None:
    log = results_log(args.out)
    done = {(r["strength"], r["seed"], r["method"]) for r in read_log(log)}
    bench = Workbench.load(run_spec(model=args.model, max_tokens=args.max_tokens))
    base = parse_noise_spec(args.noise)
    train_noise = args.noise if args.train_noise == "chip" else args.train_noise  # the 1× chip, whatever the strength
    options = {"lora_train_noise": train_noise, "lora_loss": args.loss, "calib_tokens": args.calib_tokens}
    if args.cache:
        options["lora_cache"] = args.cache

    def ppl() -> float:
        return perplexity(bench.model, bench.ids, bench.window, bench.window, bench.batch_size).ppl

    if (0.0, -1, "clean") not in done:
        with log.open("a") as handle:
            handle.write(json.dumps({"strength": 0.0, "seed": -1, "method": "clean", "ppl": ppl()}) + "\n")
    for strength in [float(s) for s in args.strengths.split(",")]:
        for seed in parse_seeds(args.seeds):
            pending = [m for m in args.methods.split(",") if (strength, seed, m) not in done]
            if not pending:
                continue
            with apply_noise_(bench.model, base.scaled(strength), seed) as chip:
                for method in pending:
                    started = time.perf_counter()
                    calibration = None if method == "none" else calibrate_(
                        bench.model, calibration_config(method=method, **options), bench.calib_ids, chip=chip)
                    record = {"noise": args.noise, "strength": strength, "seed": seed, "method": method,
                              "train_noise": train_noise, "loss": args.loss, "ppl": ppl(),
                              "seconds": time.perf_counter() - started,
                              "digital_share": calibration.digital_share() if calibration else 0.0}
                    if calibration is not None:
                        trained = calibration.report["ahwa-lora"]
                        record["training"] = {k: trained[k] for k in ("steps", "best_step", "stopped", "epochs",
                                                                     "train_seconds", "parameters", "source", "key",
                                                                     "holdout_by_check")}
                        if "ahwa-lora-retune" in calibration.report:
                            record["per_chip"] = calibration.report["ahwa-lora-retune"]
                        calibration.remove()
                    with log.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
                    print(json.dumps({k: record[k] for k in ("strength", "seed", "method", "ppl", "seconds")}),
                          flush=True)


def report(folder: Path) -> str:
    records = read_log(folder / "results.jsonl")
    clean = next(r["ppl"] for r in records if r["method"] == "clean")
    lines = [f"clean PPL {clean:.3f}; recovery of the noisy gap, mean ± std over seeds (paired on chip seeds)", "",
             "| strength | method | chips | PPL | recovery of the gap | digital share | s / chip (median) | p vs none |",
             "|---|---|---|---|---|---|---|---|"]
    for strength in sorted({r["strength"] for r in records if r["method"] != "clean"}):
        rows = [r for r in records if r["strength"] == strength]
        noisy = {r["seed"]: r["ppl"] for r in rows if r["method"] == "none"}
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = {r["seed"]: r for r in rows if r["method"] == method and r["seed"] in noisy}
            if not mine:
                continue
            recovery = [100 * (noisy[s] - r["ppl"]) / (noisy[s] - clean) for s, r in sorted(mine.items())]
            ppls = [r["ppl"] for r in mine.values()]
            seeds = sorted(mine)
            test = paired_test([noisy[s] for s in seeds], [mine[s]["ppl"] for s in seeds])["t_pvalue"] \
                if method != "none" and len(mine) > 1 else None
            spread = f" ± {statistics.stdev(recovery):.1f}" if len(recovery) > 1 else ""
            lines.append(f"| {strength:g}× | {method} | {len(mine)} | {statistics.mean(ppls):.3f} | "
                         f"{statistics.mean(recovery):+.1f}{spread} % | "
                         f"{100 * statistics.mean(r['digital_share'] for r in mine.values()):.2f} % | "
                         f"{statistics.median(r['seconds'] for r in mine.values()):.1f} | "
                         f"{'–' if test is None else f'{test:.3g}'} |")
    trained = next((r["training"] for r in records if "training" in r), None)
    if trained:
        lines += ["", f"Training: {trained['steps']} steps ({trained['epochs']:.1f} epochs of the fit tokens), best "
                      f"step {trained['best_step']}, {trained['stopped']}, {trained['train_seconds']:.0f} s, "
                      f"{trained['parameters']:,} digital parameters."]
    return "\n".join(lines)


def adapter_share(spec: str, rank: int = 8) -> dict:
    """AHWA-LoRA's digital share on a model, counted from its structure on the meta device (no weights): a scale per
    output column and A (rank × in), B (out × rank) on every on-chip matrix (every expert slot its own), over the
    weights the chip holds (the default roles)."""
    from romer.models import resolve_model_path
    from romer.noise import NoiseConfig
    from romer.noise.roles import on_chip_tensors
    from romer.scale.memory import meta_model

    model, _ = meta_model(resolve_model_path(spec, False))
    weights = adapters = 0
    for tensor in on_chip_tensors(model, NoiseConfig().roles):
        shape = tuple(tensor.param.shape)
        slots, out_dim, in_dim = (1, *shape) if len(shape) == 2 else shape
        weights += slots * out_dim * in_dim
        adapters += slots * (out_dim + rank * (out_dim + in_dim))
    return {"model": spec, "chip_weights": weights, "adapter_parameters": adapters, "share": adapters / weights}


def main() -> None:
    parser = bench_parser(__doc__, "runs/bench-ahwa")
    parser.add_argument("--model", default="romer-tiny")
    parser.add_argument("--noise", default="cim-80c")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--strengths", default="1,0.8,1.2")
    parser.add_argument("--methods", default="none,ahwa-lora,ahwa-lora-retune")
    parser.add_argument("--train-noise", default="chip", help="chip (the --noise chip at 1×) or a preset spec")
    parser.add_argument("--loss", default="task", choices=("task", "distill"))
    parser.add_argument("--max-tokens", type=int, default=16384)
    parser.add_argument("--calib-tokens", type=int, default=32768)
    parser.add_argument("--cache", default="", help="lora_cache: the folder of trained adapters")
    parser.add_argument("--report", help="print the table of this results folder (no run)")
    parser.add_argument("--count", help="comma list of models or config folders: print the adapters' digital share")
    args = parse_bench(parser)
    if args.count:
        for spec in args.count.split(","):
            row = adapter_share(spec)
            print(f"{row['model']}: {row['adapter_parameters']:,} adapter parameters over {row['chip_weights']:,} "
                  f"chip weights = {100 * row['share']:.2f} %")
        return
    if args.report:
        print(report(Path(args.report)))
        return
    run(args)
    print(report(Path(args.out)))


if __name__ == "__main__":
    main()
