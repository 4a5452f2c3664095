"""Expert-load heatmaps: layers × experts, clean | noisy | difference."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_heatmap(clean: list[list[float]], noisy: list[list[float]] | None, path: str | Path, title: str) -> Path:
    """Write a PNG of per-layer expert shares relative to uniform (1.0 = a fair share)."""
    clean_rel = np.array([np.asarray(f) * len(f) for f in clean])
    panels = [("clean", clean_rel)]
    if noisy is not None:
        noisy_rel = np.array([np.asarray(f) * len(f) for f in noisy])
        panels += [("noisy", noisy_rel), ("noisy − clean", noisy_rel - clean_rel)]
    layers, experts = clean_rel.shape
    figure, axes = plt.subplots(len(panels), 1, figsize=(min(3 + 0.25 * experts, 14), len(panels) * (1.0 + 0.35 * layers) + 0.6),
                                squeeze=False)
    top = max(2.0, float(max(p.max() for _, p in panels[:2])))
    for axis, (name, values) in zip(axes[:, 0], panels):
        if name.startswith("noisy −"):
            bound = max(float(np.abs(values).max()), 1e-6)
            image = axis.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
        else:
            image = axis.imshow(values, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        axis.set_title(name)
        axis.set_xlabel("expert")
        axis.set_ylabel("MoE layer")
        axis.set_yticks(range(layers))
        figure.colorbar(image, ax=axis, fraction=0.03, pad=0.01, label="share × E")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    temporary.replace(path)
    return path
