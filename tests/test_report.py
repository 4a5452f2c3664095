"""report/: results.json's statistics, report.md and the console table built from records alone (no model)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from romer.campaign.spec import run_spec
from romer.cost import MatrixUse, Usage
from romer.report import markdown
from romer.report.console import campaign_table, run_bill_table
from romer.report.summary import build_results

DATASET = {"name": "stdlib", "split": "test", "tokens": 4096, "sha256": "0" * 64}


def usage(uses: tuple[float, float], digital: int = 0) -> dict:
    return Usage(matrices=[MatrixUse("q", 0, "attention", 256, 256, (256, 256), (1.0,), (digital,), (False,)),
                           MatrixUse("experts", 0, "experts", 512, 256, (512, 256), uses, (0, 0), (False, False))],
                 layers=1, moe_layers=1, hidden=256).as_dict()


def records() -> list[dict]:
    rows = [{"kind": "clean", "ppl": 10.0, "frequency": [[0.5, 0.5]], "load_cv": [0.0], "starved": [0]}]
    for seed, (noisy, fixed) in enumerate(((14.0, 11.0), (16.0, 12.0), (15.0, 12.5))):
        common = {"kind": "chip", "noise": "cim-80c", "strength": 1.0, "seed": seed, "load_cv": [0.5],
                  "starved": [1], "topk_agreement": [0.9], "calib_seconds": 0.0}
        rows.append({**common, "method": "none", "ppl": noisy, "frequency": [[0.9, 0.1]], "usage": usage((1.8, 0.2))})
        rows.append({**common, "method": "romer", "ppl": fixed, "frequency": [[0.5, 0.5]], "usage": usage((1.0, 1.0)),
                     "calibration": {"digital_share": 0.0}})
        rows.append({**common, "method": "outliers", "ppl": fixed + 0.5, "frequency": [[0.9, 0.1]],
                     "usage": usage((1.8, 0.2), digital=655), "calibration": {"digital_share": 0.01}})
    return rows


@pytest.fixture
def results() -> dict:
    spec = run_spec(model="romer-tiny", seeds=[0, 1, 2], methods=["none", "romer", "outliers"], clean_cost=False)
    return build_results(spec, records(), DATASET, DATASET | {"split": "calib"}, window=512, stride=512)


def test_recovery_and_paired_statistics(results):
    romer = results["methods"]["romer"]
    assert romer["recovery"] == pytest.approx([3 / 4, 4 / 6, 2.5 / 5])
    assert romer["reduction"] == pytest.approx([1 - 11 / 14, 1 - 12 / 16, 1 - 12.5 / 15])
    assert romer["vs_none"]["t_pvalue"] < 0.05


def test_the_bill_pairs_each_seed_with_its_uncalibrated_chip(results):
    none, romer, outliers = (results["methods"][m]["bill"] for m in ("none", "romer", "outliers"))
    assert none["energy_vs_none_mean"] == 1.0 and none["latency_vs_none_mean"] == 1.0
    assert none["context"] == 256  # half the window
    # ROMER's rebalanced routing: the same expert work, the busiest expert no longer sets the pace
    assert romer["energy_vs_none_mean"] == pytest.approx(1.0, rel=1e-6)
    assert romer["latency_vs_none_mean"] < 1.0 and romer["latency_vs_balanced_mean"] == pytest.approx(1.0)
    assert none["latency_vs_balanced_mean"] > 1.0
    # outliers: the same routing, 655 digital MACs per use of q
    assert outliers["energy_vs_none_mean"] > 1.0
    assert outliers["digital_mac_share_mean"] == pytest.approx(655 / (655 + 256 * 256 + 2 * 512 * 256))


def test_report_md_and_the_console_table_carry_the_bill(results, tmp_path):
    text = markdown.render(results, {"perplexity": "p.png", "heatmaps": "h.png", "topk": "t.png"})
    assert "## What each method costs per token" in text and "pcm-64core" in text
    row = next(line for line in text.splitlines() if line.startswith("| outliers |"))
    assert f"{results['methods']['outliers']['bill']['energy_vs_none_mean']:.3f}×" in row
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(campaign_table(results, width=200))
    assert "energy/token" in console.file.getvalue()


def test_run_bill_table_renders(tmp_path):
    record = {"run": "x", "chip_cost": "pcm-64core", "batch": 1, "context": 256, "methods": {"none": {
        "chips": 3, "energy_nj": 1000.0, "energy_vs_none": 1.0, "latency_us": 2.0, "latency_vs_none": 1.0,
        "latency_vs_balanced": 1.3, "digital_mac_share": 0.0, "digital_store_bytes": 0.0, "all_digital_nj": 5.0}}}
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(run_bill_table(record))
    assert "1.300×" in console.file.getvalue()


def test_romer_cost_prices_a_run_folder_at_another_batch(tmp_path):
    import json

    from romer.cost import get_chip_cost
    from romer.cost.inspect import run_bills

    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    (tmp_path / "run.json").write_text(json.dumps({"inputs": {"window": 512}}))
    one = run_bills(tmp_path, get_chip_cost("pcm-64core"), batch=1)
    many = run_bills(tmp_path, get_chip_cost("3d-cim"), batch=16)
    assert one["context"] == 256 and one["methods"]["none"]["chips"] == 3
    assert one["methods"]["none"]["energy_vs_none"] == 1.0
    assert many["methods"]["outliers"]["energy_nj"] < one["methods"]["outliers"]["energy_nj"]  # reads shared by 16
