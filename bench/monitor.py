"""The drift monitor on its own: how often it cries wolf, when it fires, how it tracks the loss, what it costs (issue 33).

    python bench/monitor.py [--noise pcm-cim] [--seeds 0-4] [--calibrate-at 1h@25C]
                            [--times 1h,1d,1w,1mo,1y] [--temperatures 25,55,80] [--out runs/bench-monitor]

Per chip seed (uncalibrated: the monitor watches the chip, whatever calibration it carries), two monitors side by
side (`romer.diagnosis.monitor`):
- **probe**: the reference is a stored probe, the first `--monitor-tokens` of the calibration text, replayed at each
  check; the alarm level is half the chip's distance from the clean model on it at calibration;
- **live**: the reference is the first window of live traffic (the test split after the scored tokens); the floor and
  spread come from the next `--floor-windows` windows, and the alarm level is 4 spreads above the floor.
Then:
- **unchanged**: the same chip, still at `--calibrate-at`, checked on every remaining traffic window (live) or on the
  probe again (probe): each alarm there is a false alarm;
- **moved**: the chip read at every (time, temperature) of the grid, checked on one fixed later window (live) or the
  probe, beside its true perplexity on the first `--max-tokens` test tokens (never monitor traffic).
Spearman's ρ pools the moved readings of every seed (loss since calibration against score). The cost: seconds of a
monitored forward pass (the snapshot's statistics) against a plain one on the same tokens, side by side.
One line per seed in results.jsonl (resumable); the tables are printed at the end.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from romer import Condition, apply_noise_
from romer.campaign.run import Workbench
from romer.campaign.spec import parse_seeds, run_spec
from romer.diagnosis.monitor import drift_score, reference, snapshot
from romer.evaluation import perplexity
from romer.noise import parse_noise_spec
from calibration_args import bench_parser, parse_bench
from jsonl_log import read_log, results_log


def plain_forward(model, ids: torch.Tensor, window: int, batch_size: int) -> None:
    with torch.no_grad():
        sequences = ids[: ids.numel() // window * window].view(-1, window)
        for start in range(0, len(sequences), batch_size):
            model(input_ids=sequences[start:start + batch_size])


def measure_seed(bench: Workbench, noise, seed: int, args, traffic: list[torch.Tensor], probe: torch.Tensor,
                 grid: list[str]) -> dict:
    window, batch = bench.window, bench.batch_size
    ppl = lambda: perplexity(bench.model, bench.ids, window, window, batch).ppl  # noqa: E731
    first, floor, later = traffic[0], traffic[1:1 + args.floor_windows], traffic[1 + args.floor_windows:]
    clean = {"probe": snapshot(bench.model, probe, window, batch), "live": snapshot(bench.model, first, window, batch)}
    with apply_noise_(bench.model, noise, seed, at=Condition.parse(args.calibrate_at)) as chip:
        stored = {"probe": reference(bench.model, probe, window, batch, clean=clean["probe"]),
                  "live": reference(bench.model, first, window, batch, others=floor)}
        checked = {"probe": probe, "live": later[0]}
        base = ppl()
        unchanged = {"probe": [drift_score(stored["probe"], snapshot(bench.model, probe, window, batch))],
                     "live": [drift_score(stored["live"], snapshot(bench.model, ids, window, batch)) for ids in later]}
        started = time.perf_counter()
        plain_forward(bench.model, probe, window, batch)
        plain = time.perf_counter() - started
        started = time.perf_counter()
        snapshot(bench.model, probe, window, batch)
        monitored = time.perf_counter() - started
        moved = {"probe": [], "live": []}
        for condition in grid:
            chip.move_to(Condition.parse(condition))
            loss = ppl() - base
            for mode in moved:
                moved[mode].append({"condition": condition, "loss": loss,
                                    **drift_score(stored[mode], snapshot(bench.model, checked[mode], window, batch))})
    return {"seed": seed, "base_ppl": base,
            "references": {mode: {"floor": r.floor, "spread": r.spread, "damage": r.damage, "threshold": r.threshold()}
                           for mode, r in stored.items()},
            "unchanged": unchanged, "moved": moved,
            "seconds_plain": plain, "seconds_monitored": monitored, "tokens": int(probe.numel())}


def report(records: list[dict], grid: list[str]) -> None:
    from scipy.stats import spearmanr

    for mode in ("probe", "live"):
        unchanged = [u for r in records for u in r["unchanged"][mode]]
        moved = [m for r in records for m in r["moved"][mode]]
        rho = spearmanr([m["score"] for m in moved], [m["loss"] for m in moved]).statistic
        per_chip = [spearmanr([m["score"] for m in r["moved"][mode]], [m["loss"] for m in r["moved"][mode]]).statistic
                    for r in records]
        print(f"\n**{mode}** monitor: {len(unchanged)} unchanged checks, {sum(u['recalibrate'] for u in unchanged)} "
              f"false alarms (largest unchanged score / alarm level: "
              f"{max(u['score'] / u['threshold'] for u in unchanged):.2f}); Spearman ρ against the loss since "
              f"calibration {rho:.3f} pooled over {len(moved)} readings, per chip {min(per_chip):.3f}–"
              f"{max(per_chip):.3f}")
        print("| condition | PPL loss since calibration | score / alarm level | alarms |")
        print("|---|---|---|---|")
        for condition in grid:
            rows = [m for r in records for m in r["moved"][mode] if m["condition"] == condition]
            loss = [m["loss"] for m in rows]
            level = [m["score"] / m["threshold"] for m in rows]
            print(f"| {condition} | {statistics.fmean(loss):+.3f} ± {statistics.stdev(loss) if len(loss) > 1 else 0:.3f}"
                  f" | {statistics.fmean(level):.2f} ({min(level):.2f}–{max(level):.2f}) "
                  f"| {sum(m['recalibrate'] for m in rows)} of {len(rows)} |")
    cost = [r["seconds_monitored"] / r["seconds_plain"] for r in records]
    print(f"\ncost: a monitored forward pass takes {statistics.fmean(cost):.2f}× a plain one ({min(cost):.2f}–"
          f"{max(cost):.2f}, {records[0]['tokens']} tokens, side by side)")


def main() -> None:
    parser = bench_parser(__doc__, "runs/bench-monitor")
    parser.add_argument("--noise", default="pcm-cim")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--calibrate-at", default="1h@25C")
    parser.add_argument("--times", default="1h,1d,1w,1mo,1y")
    parser.add_argument("--temperatures", default="25,55,80")
    parser.add_argument("--max-tokens", type=int, default=4096, help="scored test tokens (romer age's default)")
    parser.add_argument("--monitor-tokens", type=int, default=4096, help="tokens per traffic window")
    parser.add_argument("--floor-windows", type=int, default=6)
    args = parse_bench(parser)
    log = results_log(args.out)
    bench = Workbench.load(run_spec(max_tokens=None))
    size = args.monitor_tokens // bench.window * bench.window
    rest = bench.ids[args.max_tokens:]
    traffic = [rest[i * size:(i + 1) * size] for i in range(rest.numel() // size)]
    if len(traffic) < args.floor_windows + 2:
        raise SystemExit(f"the test split holds {len(traffic)} windows of {size} tokens after the scored ones; "
                         f"lower --monitor-tokens or --floor-windows")
    from dataclasses import replace

    bench = replace(bench, ids=bench.ids[:args.max_tokens])
    probe = bench.calib_ids[:size]
    noise = parse_noise_spec(args.noise)
    start = Condition.parse(args.calibrate_at)
    grid = [f"{t}@{c}C" for c in args.temperatures.split(",") for t in args.times.split(",")
            if Condition.parse(f"{t}@{c}C") != start]
    records = read_log(log)
    for seed in parse_seeds(args.seeds):
        if any(r["seed"] == seed for r in records):
            continue
        record = measure_seed(bench, noise, seed, args, traffic, probe, grid)
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        records.append(record)
        print(json.dumps({"seed": seed, **{mode: {"false_alarms": sum(u["recalibrate"] for u in record["unchanged"][mode]),
                                                  "alarms": [m["condition"] for m in record["moved"][mode]
                                                             if m["recalibrate"]]} for mode in ("probe", "live")}}),
              flush=True)
    print(f"{args.noise}, monitored from {args.calibrate_at}; {size} tokens per check (the probe: the first of the "
          f"calibration text; live: windows of the test split after the scored tokens, floor over "
          f"{args.floor_windows}); seeds {args.seeds}")
    report(records, grid)


if __name__ == "__main__":
    main()
