"""The campaign's figures: perplexity per method with 95 % intervals, expert-load heatmaps,
top-k agreement per layer, and perplexity against noise strength (sweeps)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure, path: Path) -> Path:
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.tight_layout()
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)
    return path


def perplexity_bars(results: dict, path: Path) -> Path:
    methods = results["methods"]
    names = list(methods)
    means = [methods[m]["ppl_mean"] for m in names]
    errors = np.array([[m["ppl_mean"] - m["ppl_ci95"][0], m["ppl_ci95"][1] - m["ppl_mean"]] for m in methods.values()]).T
    figure, axis = plt.subplots(figsize=(1.6 + 1.1 * len(names), 3.6))
    axis.bar(names, means, yerr=errors, capsize=6, color=["#b0b0b0"] + ["#4c72b0"] * (len(names) - 1))
    axis.axhline(results["clean"]["ppl"], color="#2a9d2a", linestyle="--", label=f"clean {results['clean']['ppl']:.3f}")
    for seed_index in range(len(methods[names[0]]["ppl"])):
        axis.plot(names, [methods[m]["ppl"][seed_index] for m in names], color="black", alpha=0.25, marker=".")
    low = min(min(m["ppl"]) for m in methods.values())
    axis.set_ylim(min(low, results["clean"]["ppl"]) * 0.97, None)
    axis.set_ylabel("perplexity (lower is better)")
    axis.set_title(f"{results['model']} on {results['noise']['name']}: mean, 95 % CI, seeds paired")
    axis.legend(loc="upper right")
    return _save(figure, path)


def cost_pareto(results: dict, path: Path) -> Path | None:
    """Recovery of the gap against what a method costs: the share of stored weights it keeps digital, and the energy
    per token it costs relative to the uncalibrated chip (romer.cost's bill of the routing each chip measured).
    None when the run priced fewer than two calibrated methods."""
    methods = {m: v for m, v in results["methods"].items() if m != "none" and "bill" in v}
    if len(methods) < 2:
        return None
    figure, (stored, energy) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    recovery = {name: 100 * m["recovery_mean"] for name, m in methods.items()}
    share = {name: max(100 * m.get("digital_share_mean", 0.0), 1e-3) for name, m in methods.items()}
    relative = {name: m["bill"]["energy_vs_none_mean"] for name, m in methods.items()}
    stored.scatter(list(share.values()), list(recovery.values()), color="#4c72b0")
    energy.scatter(list(relative.values()), list(recovery.values()), color="#dd8452")
    stored.set_xscale("log")
    _label_points(stored, {name: (share[name], recovery[name]) for name in methods})
    _label_points(energy, {name: (relative[name], recovery[name]) for name in methods})
    stored.set_xlabel("stored weights kept digital (%)")
    stored.set_ylabel("recovery of the noisy gap (%)")
    bill = next(iter(methods.values()))["bill"]
    energy.set_xlabel(f"energy per token / uncalibrated chip ({bill['chip_cost']}, batch {bill['batch']})")
    energy.axvline(1.0, color="#b0b0b0", linestyle="--")
    figure.suptitle(f"{results['model']} on {results['noise']['name']}: recovery against stored share and energy")
    return _save(figure, path)


def _label_points(axis, points: dict[str, tuple[float, float]]) -> None:
    """Name each point beside it, moving a name up or down when it would cover a name already placed (the names of
    points that nearly coincide are stacked, not printed over each other)."""
    figure = axis.get_figure()
    (x_low, x_high), (y_low, y_high) = axis.get_xlim(), axis.get_ylim()
    log_x = axis.get_xscale() == "log"
    width_pt = axis.bbox.width / figure.dpi * 72
    height_pt = axis.bbox.height / figure.dpi * 72
    char_pt, line_pt = 5.0, 10.0

    def to_points(x: float, y: float) -> tuple[float, float]:
        fraction_x = ((np.log10(x) - np.log10(x_low)) / (np.log10(x_high) - np.log10(x_low)) if log_x
                      else (x - x_low) / (x_high - x_low))
        return fraction_x * width_pt, (y - y_low) / (y_high - y_low) * height_pt

    boxes: list[tuple[float, float, float, float]] = []
    for name in sorted(points, key=lambda n: -points[n][1]):
        px, py = to_points(*points[name])
        for shift in (3, -9, 15, -21, 27, -33, 39):
            box = (px + 3, py + shift, px + 3 + char_pt * len(name), py + shift + line_pt)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                break
        boxes.append(box)
        leader = None if shift == 3 else {"arrowstyle": "-", "color": "#999999", "linewidth": 0.6}
        axis.annotate(name, points[name], fontsize=8, xytext=(3, shift), textcoords="offset points",
                      arrowprops=leader)


def load_heatmaps(results: dict, path: Path) -> Path:
    panels = [("clean", results["clean"]["frequency"])]
    panels += [(f"{'noisy' if m == 'none' else m}", v["frequency"]) for m, v in results["methods"].items() if v["frequency"]]
    panels = [(name, np.array([np.asarray(f) * len(f) for f in freq])) for name, freq in panels if len(freq)]
    layers, experts = panels[0][1].shape
    figure, axes = plt.subplots(len(panels), 1, squeeze=False,
                                figsize=(min(3 + 0.25 * experts, 14), len(panels) * (0.9 + 0.3 * layers) + 0.6))
    top = max(2.0, max(float(p.max()) for _, p in panels))
    for axis, (name, values) in zip(axes[:, 0], panels):
        image = axis.imshow(values, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        axis.set_title(f"{name} (mean over seeds)")
        axis.set_ylabel("layer")
        axis.set_yticks(range(layers))
        figure.colorbar(image, ax=axis, fraction=0.03, pad=0.01, label="share × E")
    axes[-1, 0].set_xlabel("expert")
    return _save(figure, path)


def topk_agreement(results: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5, 3.4))
    for method, values in results["methods"].items():
        if values["topk_agreement"]:
            axis.plot(range(len(values["topk_agreement"])), values["topk_agreement"], marker="o",
                      label="noisy" if method == "none" else method)
    axis.set_xlabel("MoE layer")
    axis.set_ylabel("top-k agreement with clean")
    axis.set_ylim(0, 1)
    axis.legend()
    return _save(figure, path)


def sweep(results: dict, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    noises = sorted({c["noise"] for c in results["chips"]})
    styles = ["-", "--", ":", "-."]
    for n, noise in enumerate(noises):
        chips = sorted((c for c in results["chips"] if c["noise"] == noise), key=lambda c: c["strength"])
        for method in chips[0]["methods"]:
            x = [c["strength"] for c in chips]
            y = [c["methods"][method]["ppl_mean"] for c in chips]
            err = [c["methods"][method]["ppl_std"] for c in chips]
            axis.errorbar(x, y, yerr=err, capsize=3, linestyle=styles[n % 4], marker="o",
                          label=f"{noise}: {'noisy' if method == 'none' else method}")
    axis.axhline(results["clean"]["ppl"], color="#2a9d2a", linestyle="--", label="clean")
    axis.set_xlabel("noise strength (× preset)")
    axis.set_ylabel("perplexity")
    axis.legend(fontsize=7)
    return _save(figure, path)


def _label(method: str) -> str:
    return "noisy" if method == "none" else method


def regime_map(results: dict, path: Path) -> Path:
    """Recovery of the noise gap per method against the varied field(s): lines with ± std over seeds for
    one field (and the noisy model's damage beside them), one heatmap per method for two."""
    fields, chips = results["vary"], results["chips"]
    methods = [m for m in chips[0]["methods"] if m != "none"]
    if len(fields) == 1:
        field = fields[0]
        chips = sorted(chips, key=lambda c: c["values"][field])
        x = [c["values"][field] for c in chips]
        figure, (damage, axis) = plt.subplots(1, 2, figsize=(10, 3.8))
        damage.plot(x, [c["noisy_ppl_mean"] / c["clean_ppl"] for c in chips], marker="o", color="#b0b0b0")
        damage.set_xlabel(field)
        damage.set_ylabel("noisy PPL / clean PPL")
        damage.set_title("damage")
        for method in methods:
            axis.errorbar(x, [100 * c["methods"][method]["recovery_mean"] for c in chips],
                          yerr=[100 * c["methods"][method]["recovery_std"] for c in chips], capsize=3, marker="o",
                          label=method)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xlabel(field)
        axis.set_ylabel("recovery of the gap, % (± std over seeds)")
        axis.set_title("where each method pays off")
        axis.legend(fontsize=8)
        return _save(figure, path)
    rows_field, cols_field = fields
    rows = sorted({c["values"][rows_field] for c in chips}, key=float)
    cols = sorted({c["values"][cols_field] for c in chips}, key=float)
    panels = ["none"] + methods
    figure, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(1.2 + 3.0 * len(panels), 3.4))
    for axis, method in zip(axes[0], panels):
        grid = np.full((len(rows), len(cols)), np.nan)
        for chip in chips:
            r, c = rows.index(chip["values"][rows_field]), cols.index(chip["values"][cols_field])
            grid[r, c] = (chip["noisy_ppl_mean"] / chip["clean_ppl"] if method == "none"
                          else 100 * chip["methods"][method]["recovery_mean"])
        if method == "none":
            image = axis.imshow(grid, cmap="Greys", aspect="auto", origin="lower")
            axis.set_title("noisy PPL / clean")
        else:
            bound = max(1.0, float(np.nanmax(np.abs(grid))))
            image = axis.imshow(grid, cmap="RdBu", vmin=-bound, vmax=bound, aspect="auto", origin="lower")
            axis.set_title(f"{method}: recovery %")
        for (r, c), value in np.ndenumerate(grid):
            shade = image.norm(value)  # dark cells get white text
            dark = shade > 0.6 if method == "none" else abs(shade - 0.5) > 0.35
            axis.text(c, r, f"{value:.2f}" if method == "none" else f"{value:+.0f}", ha="center", va="center",
                      fontsize=7, color="white" if dark else "black")
        axis.set_xticks(range(len(cols)), [f"{v:g}" for v in map(float, cols)])
        axis.set_yticks(range(len(rows)), [f"{v:g}" for v in map(float, rows)])
        axis.set_xlabel(cols_field)
        axis.set_ylabel(rows_field)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02)
    return _save(figure, path)


def role_gaps(diagnosis: dict, path: Path) -> Path:
    """`romer diagnose`: the perplexity gap with noise on one role at a time, per chip seed, beside the whole
    chip's gap and the part of it that perfect routing closes."""
    seeds = diagnosis["per_seed"]
    roles = list(diagnosis["role_gap"])
    width = 0.8 / (len(roles) + 2)
    figure, axis = plt.subplots(figsize=(2.0 + 1.4 * len(seeds), 3.8))
    x = np.arange(len(seeds))
    bars = [("whole chip", [s["gap"] for s in seeds], "#404040"),
            ("perfect routing recovers", [s["noisy_ppl"] - s["oracle_routing_ppl"] for s in seeds], "#2a9d2a")]
    bars += [(f"{role} only", [s["role_gap"][role] for s in seeds], None) for role in roles]
    for i, (label, values, color) in enumerate(bars):
        axis.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label, color=color)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(x, [f"seed {s['seed']}" for s in seeds])
    axis.set_ylabel("perplexity gap over clean")
    axis.set_title(f"where the gap sits ({diagnosis['noise']['name']}); router-calibration ceiling "
                   f"≈ {100 * max(diagnosis['ceiling'], 0):.0f} %", fontsize=9)
    axis.legend(fontsize=7, ncol=2)
    return _save(figure, path)
