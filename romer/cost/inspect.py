"""`romer cost`: the bill of a model shape from its config alone, or of every method a finished run measured."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from romer.cost.bill import Bill, price
from romer.cost.model import ChipCost
from romer.cost.usage import Usage, token_usage
from romer.errors import RomerError


def shape_usage(spec: str, trust_remote_code: bool = False) -> Usage:
    """The usage of a model shape built on the meta device from its config (no weights read), every expert alike."""
    from romer.scale.memory import config_folder, meta_model

    model, _ = meta_model(config_folder(spec, trust_remote_code), trust_remote_code)
    return token_usage(model)


def shape_bill(spec: str, cost: ChipCost, batch: int, context: int, trust_remote_code: bool = False) -> dict:
    usage = shape_usage(spec, trust_remote_code)
    bill = price(usage, cost, batch=batch, context=context)
    on_chip = sum(len(m.uses) * m.out_features * m.in_features for m in usage.matrices)
    return {"model": spec, "chip_cost": cost.name, "batch": batch, "context": context, "routing": "uniform",
            "on_chip_parameters": on_chip, "bill": bill.as_dict()}


def run_bills(folder: str | Path, cost: ChipCost, batch: int, context: int | None = None) -> dict:
    """Each method's mean bill over the chips and seeds of a finished run folder (its records' measured usage),
    relative to the uncalibrated chip of the same seed."""
    folder = Path(folder)
    path = folder / "results.jsonl"
    if not path.is_file():
        raise RomerError(f"{folder} holds no results.jsonl; pass the --out folder of a romer run")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    chips = [r for r in records if r.get("kind") == "chip"]
    if not any("usage" in r for r in chips):
        raise RomerError(f"{folder}'s records hold no usage (a run before romer.cost); run it again to price it")
    if context is None:
        meta = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
        window = (meta.get("inputs") or {}).get("window") or 2048
        context = max(int(window) // 2, 1)
    bills: dict[tuple, Bill] = {}
    for r in chips:
        if "usage" in r:
            bills[(r["noise"], r["strength"], r["seed"], r["method"])] = price(Usage.from_dict(r["usage"]), cost,
                                                                               batch=batch, context=context)
    by_method: dict[str, list[tuple[Bill, Bill]]] = defaultdict(list)
    for (noise, strength, seed, method), bill in bills.items():
        none = bills.get((noise, strength, seed, "none"))
        if none is not None:
            by_method[method].append((bill, none))
    methods = {}
    for method, pairs in by_method.items():
        methods[method] = {
            "chips": len(pairs),
            "energy_nj": float(np.mean([b.energy_nj for b, _ in pairs])),
            "energy_vs_none": float(np.mean([b.energy_nj / n.energy_nj for b, n in pairs])),
            "latency_us": float(np.mean([b.latency_us for b, _ in pairs])),
            "latency_vs_none": float(np.mean([b.latency_us / n.latency_us for b, n in pairs])),
            "latency_vs_balanced": float(np.mean([b.latency_us / b.balanced_latency_us for b, _ in pairs])),
            "digital_mac_share": float(np.mean([b.digital_mac_share for b, _ in pairs])),
            "digital_store_bytes": float(np.mean([b.digital_store_bytes for b, _ in pairs])),
            "all_digital_nj": pairs[0][0].all_digital_nj}
    return {"run": str(folder), "chip_cost": cost.name, "batch": batch, "context": context, "methods": methods}
