"""How many refresh steps a calibration needs after the chip has aged, and what they cost (issue 33).

    python bench/refresh.py [--noise pcm-cim] [--method outlier-retune] [--seeds 0-2] [--at 1y@80C]
                            [--steps 10,20,40] [--batch-sizes 8,4,2] [--out runs/bench-refresh]

Per chip seed: the method is calibrated once at `--calibrate-at` (1 h, 25 °C, as `romer age`), the clean model's
targets kept for each refresh batch size (`refresh_teacher`), the chip is moved to `--at`, read aged, then refreshed
(`romer.refresh_`) with each (batch size, step count) in turn, each refresh undone before the next, so every one
starts from the same installed values. Recovery is against `none` on the same chip at `--at`; cost is the refresh's
seconds (its steps and two held-out checks; the kept targets' seconds are reported apart) over the calibration's own.
The held-out KL after each refresh (calibration text) is what a user would choose a setting by. One line per (seed,
batch size, steps) in results.jsonl (resumable per seed); the table is printed at the end.
"""

from __future__ import annotations

import json
import statistics
import time

from romer import Condition, apply_noise_, calibrate_, refresh_
from romer.calibration import calibration_config, refresh_teacher
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds, run_spec
from romer.evaluation import perplexity
from romer.noise import parse_noise_spec
from calibration_args import bench_parser, parse_bench
from jsonl_log import read_log, results_log


def main() -> None:
    parser = bench_parser(__doc__, "runs/bench-refresh")
    parser.add_argument("--noise", default="pcm-cim")
    parser.add_argument("--method", default="outlier-retune")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--calibrate-at", default="1h@25C")
    parser.add_argument("--at", default="1y@80C")
    parser.add_argument("--steps", default="10,20,40")
    parser.add_argument("--batch-sizes", default="8,4", help="sequences per refresh step")
    parser.add_argument("--max-tokens", type=int, default=4096, help="test tokens (romer age's default)")
    args = parse_bench(parser)
    log = results_log(args.out)
    steps = [int(s) for s in args.steps.split(",")]
    bench = Workbench.load(run_spec(max_tokens=args.max_tokens))
    noise = parse_noise_spec(args.noise)

    def ppl() -> float:
        return perplexity(bench.model, bench.ids, bench.window, bench.window, bench.batch_size).ppl

    records = read_log(log)
    clean = next((r["ppl"] for r in records if r["kind"] == "clean"), None)
    if clean is None:
        clean = ppl()
        records.append({"kind": "clean", "ppl": clean})
        with log.open("a") as handle:
            handle.write(json.dumps(records[-1]) + "\n")
    for seed in parse_seeds(args.seeds):
        if any(r.get("seed") == seed for r in records):
            continue
        rows = []
        with apply_noise_(bench.model, noise, seed, at=Condition.parse(args.at)):
            noisy = ppl()
        with apply_noise_(bench.model, noise, seed, at=Condition.parse(args.calibrate_at)) as chip:
            started = time.perf_counter()
            calibration = calibrate_(bench.model, calibration_config(method=args.method), bench.calib_ids, chip=chip)
            fit_seconds = time.perf_counter() - started
            batches = [int(b) for b in args.batch_sizes.split(",")]
            started = time.perf_counter()
            teachers = {size: refresh_teacher(bench.model, calibration, bench.calib_ids, size) for size in batches}
            kept_seconds = (time.perf_counter() - started) / len(batches)
            chip.move_to(Condition.parse(args.at))
            rows.append({"kind": "refresh", "seed": seed, "steps": 0, "batch_size": 0, "ppl": ppl(), "noisy": noisy,
                         "fit_seconds": fit_seconds, "seconds": 0.0})
            for size in batches:
                for count in steps:
                    record = refresh_(bench.model, calibration, bench.calib_ids, count, batch_size=size,
                                      teacher=teachers[size])
                    rows.append({"kind": "refresh", "seed": seed, "steps": count, "batch_size": size, "ppl": ppl(),
                                 "noisy": noisy, "fit_seconds": fit_seconds, "seconds": record["seconds"],
                                 "kept_teacher_seconds": kept_seconds, "best_step": record["best_step"],
                                 "holdout_kl": record["holdout_kl_after"]})
                    calibration.rollback(record["mark"])
            calibration.remove()
        with log.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        records += rows
        print(json.dumps({"seed": seed, "recovery": {f"{r['batch_size']}x{r['steps']}": round(
            100 * (r["noisy"] - r["ppl"]) / (r["noisy"] - clean), 1) for r in rows}}), flush=True)
    print(f"{args.method} on {args.noise}, calibrated at {args.calibrate_at}, read at {args.at}; recovery of the gap "
          f"(mean ± std over seeds) and the refresh's seconds over the calibration's own")
    print("| batch × steps | recovery | held-out KL after | cost (% of the fit) | refreshed values kept |")
    print("|---|---|---|---|---|")
    settings = sorted({(r.get("batch_size", 0), r["steps"]) for r in records if r.get("kind") == "refresh"},
                      key=lambda s: (s[0] != 0, -s[0], s[1]))
    for size, count in settings:
        chosen = [r for r in records if r.get("kind") == "refresh" and r["steps"] == count
                  and r.get("batch_size", 0) == size]
        recovery = [100 * (r["noisy"] - r["ppl"]) / (r["noisy"] - clean) for r in chosen]
        cost = [100 * r["seconds"] / r["fit_seconds"] for r in chosen]
        spread = f" ± {statistics.stdev(recovery):.1f}" if len(recovery) > 1 else ""
        kl = f"{statistics.mean(r['holdout_kl'] for r in chosen):.4f}" if count else "–"
        kept = sum(r.get("best_step") == count for r in chosen) if count else "–"
        print(f"| {f'{size} × {count}' if count else 'aged'} | {statistics.mean(recovery):+.1f}{spread} % | {kl} | "
              f"{min(cost):.1f}–{max(cost):.1f} % | {kept} of {len(chosen)} |")


if __name__ == "__main__":
    main()
