"""`romer age`'s plot: recovery of each condition's gap against time since programming, one panel per temperature."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from romer.noise import Condition

if TYPE_CHECKING:
    from romer.campaign.age_spec import AgeSpec


def plot_age(spec: AgeSpec, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperatures = spec.temperatures
    figure, axes = plt.subplots(1, len(temperatures), figsize=(4.5 * len(temperatures) + 2.2, 3.6), squeeze=False,
                                sharey=True)
    for axis, temperature in zip(axes[0], temperatures):
        for index, method in enumerate(m for m in spec.methods if m != "none"):
            color = f"C{index}"
            for kind, style in (("aged", "o-"), ("recalibrated", "s--"), ("refreshed", "^:")):
                points = []
                for row in summary["rows"]:
                    condition = Condition.parse(row["condition"])
                    entry = row.get(kind) or (row.get("aged") if row["condition"] == spec.calibrate_at else None)
                    if row["method"] == method and condition.temperature_c == temperature and entry \
                            and entry.get("recovery"):
                        points.append((condition.time_s, entry["recovery"]["mean"], entry["recovery"]["std"]))
                shown = {"aged": True, "recalibrated": spec.reference, "refreshed": bool(spec.refresh_steps)}[kind]
                if len(points) > (kind == "refreshed") and shown:
                    points.sort()
                    axis.errorbar([p[0] / 3600 for p in points], [p[1] for p in points], [p[2] for p in points],
                                  fmt=style, color=color, capsize=2,
                                  label=f"{method}" + ("" if kind == "aged" else f" ({kind})"))
        axis.set_xscale("log")
        axis.set_xlabel("hours since programming")
        axis.set_title(f"{temperature:g} °C")
        axis.axhline(0, color="grey", lw=0.5)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("recovery of the gap, %")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the panels, not on them
    figure.suptitle(f"{spec.model} on {spec.noise}, calibrated at {spec.calibrate_at}")
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.partial.png")  # a reader sees the old plot or the new one
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
