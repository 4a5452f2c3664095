"""`training_only`: gradients for a fit's digital parameters alone, for the length of the fit.

Callers may evaluate under `torch.no_grad()`; a fit needs gradients of its own parameters and of nothing else (the
chip's weights are detached in `analog_linear`; the model's own parameters are frozen here), and every parameter's
flag is as it was afterwards, whatever happens inside."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def training_only(model: nn.Module, params: list[torch.Tensor]) -> Iterator[None]:
    frozen = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in params)]
    for param in frozen:
        param.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    try:
        with torch.enable_grad():
            yield
    finally:
        for param in frozen:
            param.requires_grad_(True)
        for param in params:
            param.requires_grad_(False)
