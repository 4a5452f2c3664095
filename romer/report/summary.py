"""results.json: per chip (noise, strength) and method, paired statistics over the seeds."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from romer.evaluation.statistics import paired_test, recovery, reduction, summarize


def _mean(rows: list[list[float]]) -> list[float]:
    return np.mean(np.asarray(rows, dtype=np.float64), axis=0).tolist() if rows else []


def _task_means(records: list[dict]) -> dict:
    scores: dict = defaultdict(lambda: defaultdict(list))
    for record in records:
        for task, metrics in record.get("tasks", {}).items():
            for metric, value in metrics.items():
                scores[task][metric].append(value)
    return {task: {metric: float(np.mean(v)) for metric, v in metrics.items()} for task, metrics in scores.items()}


def _bills(rows: list[dict], context: int) -> list:
    """Each record's bill per token at the default chip cost (romer.cost), None where it records no usage."""
    from romer.cost import DEFAULT_CHIP_COST, Usage, get_chip_cost, price

    cost = get_chip_cost(DEFAULT_CHIP_COST)
    return [price(Usage.from_dict(r["usage"]), cost, batch=1, context=context) if "usage" in r else None for r in rows]


def chip_summary(records: list[dict], methods: list[str], clean_ppl: float, context: int = 1024) -> dict:
    """Statistics of one chip over the seeds every method finished (pairing needs the same seeds); each method's
    bill per token (energy, latency, per-token digital share) at the default chip cost, for one token at a time
    attending `context` tokens, and its energy and latency relative to the uncalibrated chip of the same seed."""
    by_method = {m: {r["seed"]: r for r in records if r["method"] == m} for m in methods}
    seeds = sorted(set.intersection(*(set(v) for v in by_method.values()))) if by_method else []
    noisy = [by_method["none"][s]["ppl"] for s in seeds]
    noisy_bills = _bills([by_method["none"][s] for s in seeds], context) if "none" in by_method else []
    summary = {}
    for method in methods:
        rows = [by_method[method][s] for s in seeds]
        ppl = [r["ppl"] for r in rows]
        stats = summarize(ppl)
        entry = {
            "seeds": seeds, "ppl": ppl, "ppl_mean": stats["mean"], "ppl_std": stats["std"], "ppl_ci95": stats["ci95"],
            "reduction": [reduction(p, n) for p, n in zip(ppl, noisy)],
            "recovery": [recovery(p, n, clean_ppl) for p, n in zip(ppl, noisy)],
            "load_cv": _mean([r["load_cv"] for r in rows if "load_cv" in r]),
            "starved": _mean([r["starved"] for r in rows if "starved" in r]),
            "topk_agreement": _mean([r["topk_agreement"] for r in rows if "topk_agreement" in r]),
            "frequency": _mean([r["frequency"] for r in rows if "frequency" in r]) if rows and "frequency" in rows[0] else [],
            "calib_seconds_mean": float(np.mean([r.get("calib_seconds", 0.0) for r in rows])) if rows else math.nan,
            # the share of the chip's weights the method keeps in digital units (Calibration.digital_share)
            "digital_share_mean": float(np.mean([r.get("calibration", {}).get("digital_share", 0.0) for r in rows]))
            if rows else math.nan,
        }
        bills = _bills(rows, context)
        if bills and all(b is not None for b in bills + noisy_bills):
            entry["bill"] = {
                "chip_cost": bills[0].chip_cost, "batch": bills[0].batch, "context": context,
                "energy_nj_mean": float(np.mean([b.energy_nj for b in bills])),
                "latency_us_mean": float(np.mean([b.latency_us for b in bills])),
                "energy_vs_none_mean": float(np.mean([b.energy_nj / n.energy_nj for b, n in zip(bills, noisy_bills)])),
                "latency_vs_none_mean": float(np.mean([b.latency_us / n.latency_us for b, n in zip(bills, noisy_bills)])),
                "latency_vs_balanced_mean": float(np.mean([b.latency_us / b.balanced_latency_us for b in bills])),
                "digital_mac_share_mean": float(np.mean([b.digital_mac_share for b in bills])),
                "all_digital_nj": bills[0].all_digital_nj, "per_seed": [b.as_dict() for b in bills]}
        for key in ("reduction", "recovery"):
            entry[f"{key}_mean"] = float(np.mean(entry[key])) if entry[key] else math.nan
            entry[f"{key}_std"] = float(np.std(entry[key], ddof=1)) if len(entry[key]) > 1 else 0.0
        entry["load_cv_mean"] = float(np.mean(entry["load_cv"])) if entry["load_cv"] else math.nan
        entry["topk_agreement_mean"] = float(np.mean(entry["topk_agreement"])) if entry["topk_agreement"] else math.nan
        tasks = _task_means(rows)
        if tasks:
            entry["tasks"] = tasks
        if method != "none":
            entry["vs_none"] = paired_test(ppl, noisy)
            if "romer" in by_method and method != "romer":
                entry["vs_romer"] = paired_test(ppl, [by_method["romer"][s]["ppl"] for s in seeds])
        summary[method] = entry
    return summary


def build_results(spec, records, dataset: dict, calib_dataset: dict, window: int, stride: int) -> dict:
    from romer.noise import parse_noise_spec

    records = list(records)
    clean = next(r for r in records if r["kind"] == "clean")
    chips = []
    wanted = set(spec.seeds)  # a folder may hold more seeds than this run asks for; the summary is of these
    for point in spec.chips():
        rows = [r for r in records if r["kind"] == "chip" and r["noise"] == point.noise
                and r["strength"] == point.strength and r["seed"] in wanted]
        methods = chip_summary(rows, spec.methods, clean["ppl"], context=max(window // 2, 1))
        for label, variant in spec.variants.items():  # what each label resolved to
            if label in methods:
                methods[label]["variant"] = {"method": variant["method"], "settings": variant.get("settings", {})}
        chips.append({"noise": point.noise, "strength": point.strength, "values": point.values,
                      "config": parse_noise_spec(point.noise).scaled(point.strength).model_dump(mode="json"),
                      "clean_ppl": clean["ppl"], "noisy_ppl_mean": methods["none"]["ppl_mean"], "methods": methods})
    calibrated_clean = {r["method"]: {"ppl": r["ppl"], "change": r["ppl"] / clean["ppl"] - 1,
                                      **({"tasks": r["tasks"]} if "tasks" in r else {})}
                        for r in records if r["kind"] == "calibrated_clean"}
    primary = chips[0]
    return {
        "model": spec.model,
        "dataset": {"name": dataset["name"], "split": dataset["split"], "tokens": dataset["tokens"],
                    "sha256": dataset["sha256"]},
        "calib_dataset": {"name": calib_dataset["name"], "split": calib_dataset["split"],
                          "sha256": calib_dataset["sha256"]},
        "window": window, "stride": stride,
        "noise": primary["config"], "strength": primary["strength"],
        "seeds": spec.seeds,
        "clean": {"ppl": clean["ppl"], "load_cv": clean.get("load_cv", []), "frequency": clean.get("frequency", []),
                  **({"tasks": clean["tasks"]} if "tasks" in clean else {})},
        "methods": primary["methods"],
        "calibrated_clean": calibrated_clean,
        "chips": chips,
        "vary": list(spec.vary),
        "spec": spec.model_dump(mode="json"),
    }
