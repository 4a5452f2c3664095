"""How many refresh steps a calibration needs after the chip has aged, and what they cost (issue 33).

    python bench/refresh.py [--noise pcm-cim] [--method outlier-retune] [--seeds 0-2] [--at 1y@80C]
                            [--steps 10,20,30,50] [--out runs/bench-refresh]

Per chip seed: the method is calibrated once at `--calibrate-at` (1 h, 25 °C, as `romer age`), the chip is moved to
`--at`, read aged, then refreshed (`romer.refresh_`) with each step count in turn, each refresh undone before the
next, so every count starts from the same installed values. Recovery is against `none` on the same chip at `--at`;
cost is the refresh's seconds over the calibration's own. One line per (seed, steps) in results.jsonl (resumable per
seed); the table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from romer import Condition, apply_noise_, calibrate_, refresh_
from romer.calibration import calibration_config
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds, run_spec
from romer.evaluation import perplexity
from romer.noise import parse_noise_spec


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", default="pcm-cim")
    parser.add_argument("--method", default="outlier-retune")
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--calibrate-at", default="1h@25C")
    parser.add_argument("--at", default="1y@80C")
    parser.add_argument("--steps", default="10,20,30,50")
    parser.add_argument("--max-tokens", type=int, default=4096, help="test tokens (romer age's default)")
    parser.add_argument("--out", default="runs/bench-refresh")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "results.jsonl"
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
            chip.move_to(Condition.parse(args.at))
            rows.append({"kind": "refresh", "seed": seed, "steps": 0, "ppl": ppl(), "noisy": noisy,
                         "fit_seconds": fit_seconds, "seconds": 0.0})
            for count in steps:
                record = refresh_(bench.model, calibration, bench.calib_ids, count)
                rows.append({"kind": "refresh", "seed": seed, "steps": count, "ppl": ppl(), "noisy": noisy,
                             "fit_seconds": fit_seconds, "seconds": record["seconds"],
                             "teacher_seconds": record["teacher_seconds"], "best_step": record["best_step"]})
                calibration.rollback(record["mark"])
            calibration.remove()
        with log.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
        records += rows
        print(json.dumps({"seed": seed, "recovery": {r["steps"]: round(100 * (r["noisy"] - r["ppl"]) /
                                                                        (r["noisy"] - clean), 1) for r in rows}}),
              flush=True)
    print(f"{args.method} on {args.noise}, calibrated at {args.calibrate_at}, read at {args.at}; recovery of the gap "
          f"(mean ± std over seeds) and the refresh's seconds over the calibration's own")
    print("| refresh steps | recovery | cost (% of the fit) | best step was the last |")
    print("|---|---|---|---|")
    for count in [0] + steps:
        chosen = [r for r in records if r.get("kind") == "refresh" and r["steps"] == count]
        if not chosen:
            continue
        recovery = [100 * (r["noisy"] - r["ppl"]) / (r["noisy"] - clean) for r in chosen]
        cost = [100 * r["seconds"] / r["fit_seconds"] for r in chosen]
        spread = f" ± {statistics.stdev(recovery):.1f}" if len(recovery) > 1 else ""
        last = sum(r.get("best_step") == count for r in chosen) if count else "–"
        print(f"| {count} | {statistics.mean(recovery):+.1f}{spread} % | {min(cost):.0f}–{max(cost):.0f} % | "
              f"{last} of {len(chosen)} |")


if __name__ == "__main__":
    main()
