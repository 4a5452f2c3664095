"""Where `retune` starts: each linear layer's corrections set by least squares, layer by layer.

A chip's on-chip linear layer computes y = (W + ΔW) x + offsets; the clean twin's weights W are
known, so on the chip's own inputs x the layer's error r = W x − y is observable without any label
(a vendor feeds calibration activations and reads the ADC outputs). Before the end-to-end fit, the
digital corrections of `romer/noise/digital.py` are set to the best they can do for that error alone:

1. each output column's gain g and offset c: a two-regressor least squares of r on (y, x_max);
2. the low-rank adapter U·V: reduced-rank regression of what remains on x, i.e. the ridge solution
   A = (XᵀX + λI)⁻¹ Xᵀr projected on the top-`rank` eigenvectors of the fitted values' covariance
   AᵀXᵀXA (the rank-r map with the least squared error on these inputs).

Only sufficient statistics are kept (XᵀX, Xᵀr, Xᵀy, Xᵀx_max and per-column sums), so memory is
in² + 2·in·out per layer whatever the number of tokens. Layers that are not `nn.Linear` (fused
expert tensors, routers that return more than logits) start at zero and are left to the fit.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Callable

import torch
from torch import nn

from romer.noise.analog import input_scale
from romer.noise.chip import ChipHandle

RIDGE = 1e-3  # λ as a fraction of the mean input power: keeps XᵀX invertible when inputs are degenerate


class _Moments:
    """Sums over tokens of one layer's products of inputs x, chip outputs y (bias removed), scales m, errors r."""

    def __init__(self) -> None:
        self.xx = self.xr = self.xy = self.xm = 0
        self.yy = self.ym = self.mm = self.yr = self.mr = 0

    def add(self, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> None:
        m = input_scale(x)
        self.xx = self.xx + x.t() @ x
        self.xr = self.xr + x.t() @ r
        self.xy = self.xy + x.t() @ y
        self.xm = self.xm + x.t() @ m
        self.yy = self.yy + (y * y).sum(0)
        self.ym = self.ym + (y * m).sum(0)
        self.mm = self.mm + (m * m).sum(0)
        self.yr = self.yr + (y * r).sum(0)
        self.mr = self.mr + (m * r).sum(0)


def linear_layers(chip: ChipHandle) -> dict[str, nn.Linear]:
    """The corrected on-chip tensors that are the weight of an `nn.Linear` (those a least-squares start can set)."""
    layers = {}
    for name in chip.corrected_names():
        module, attribute = chip.module_of(name)
        if len(chip.shape(name)) == 2 and isinstance(module, nn.Linear) and attribute == "weight":
            layers[name] = module
    return layers


@torch.no_grad()
def least_squares_start(model: nn.Module, chip: ChipHandle, sequences: torch.Tensor, batch_size: int) -> list[str]:
    """Set the corrections of every corrected `nn.Linear` of `model` on `chip` by least squares on `sequences`;
    the names set."""
    device = next(model.parameters()).device

    def run() -> None:
        for start in range(0, len(sequences), batch_size):
            model(input_ids=sequences[start:start + batch_size].to(device))

    return least_squares_fit(chip, linear_layers(chip), run)


@torch.no_grad()
def least_squares_fit(chip: ChipHandle, layers: dict[str, nn.Linear], run: Callable[[], None]) -> list[str]:
    """Set the corrections of `layers` (name → its `nn.Linear`) by least squares on the inputs they see during `run()`
    (forward passes of the whole model, or of one block on its cached inputs); the names set."""
    if not layers:
        return []
    clean = {name: chip.clean_value(name).float().to(module.weight.device)  # to each layer's device once, not per batch
             for name, module in layers.items()}
    moments = {name: _Moments() for name in layers}

    def record(name):
        def hook(module, inputs, output):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).float()
            y = output.reshape(-1, output.shape[-1]).float()
            if module.bias is not None:
                y = y - module.bias.float()
            moments[name].add(x, y, x @ clean[name].t() - y)
        return hook

    with ExitStack() as stack:
        for name, module in layers.items():
            stack.callback(module.register_forward_hook(record(name)).remove)
        run()
    for name in layers:
        _solve(chip.correction(name), moments[name])
    return sorted(layers)


def _solve(correction, s: _Moments) -> None:
    xr = s.xr
    if correction.gain is not None:
        det = s.yy * s.mm - s.ym ** 2
        usable = det > 1e-12 * (s.yy * s.mm).clamp(min=1e-30)  # a column that never lights up keeps zero
        det = torch.where(usable, det, torch.ones_like(det))
        gain = torch.where(usable, (s.yr * s.mm - s.mr * s.ym) / det, torch.zeros_like(det))
        offset = torch.where(usable, (s.mr * s.yy - s.yr * s.ym) / det, torch.zeros_like(det))
        correction.gain.copy_(gain)
        correction.offset.copy_(offset)
        xr = xr - s.xy * gain - s.xm * offset
    if correction.down is not None:
        eye = torch.eye(len(s.xx), device=s.xx.device)
        mapping = torch.linalg.solve(s.xx + RIDGE * s.xx.diagonal().mean().clamp(min=1e-12) * eye, xr)  # [in, out]
        _, vectors = torch.linalg.eigh(mapping.t() @ s.xx @ mapping)
        kept = min(correction.rank, vectors.shape[1])  # a layer with fewer outputs than the rank uses fewer
        top = vectors[:, -kept:]  # [out, kept], orthonormal
        correction.up.zero_()
        correction.up[:, :kept] = top
        correction.down[:kept] = (mapping @ top).t()
