"""Reports: results.json, report.md and the plots of a campaign; expert-load heatmaps."""

from __future__ import annotations

import json
from pathlib import Path

from romer.atomic import write_text_atomic
from romer.crashpoints import crash_point


def write_report(spec, records, inputs: dict, out: Path) -> dict:
    """`inputs`: the work bench's description (dataset, calib_dataset, window, stride)."""
    from romer.report import markdown, plots
    from romer.report.summary import build_results

    results = build_results(spec, records, inputs["dataset"], inputs["calib_dataset"], inputs["window"], inputs["stride"])
    names = {"perplexity": "perplexity.png", "heatmaps": "expert_load.png", "topk": "topk_agreement.png"}
    plots.perplexity_bars(results, out / names["perplexity"])
    plots.load_heatmaps(results, out / names["heatmaps"])
    plots.topk_agreement(results, out / names["topk"])
    if plots.cost_pareto(results, out / "cost_pareto.png") is not None:
        names["pareto"] = "cost_pareto.png"
    crash_point("report")
    if results["vary"]:
        names["regime"] = "regime_map.png"
        plots.regime_map(results, out / names["regime"])
    elif len(results["chips"]) > 1:
        names["sweep"] = "sweep.png"
        plots.sweep(results, out / names["sweep"])
    write_text_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_text_atomic(out / "report.md", markdown.render(results, names))
    results["paths"] = {"report": str(out / "report.md"), "results": str(out / "results.json"),
                        **{k: str(out / v) for k, v in names.items()}}
    return results
