"""Programming one matrix onto its arrays: the one place the device draws, the periphery draws and the folding of
the column gain meet. A chip (`chip.py`) calls it for a tensor of its own, for each expert slot of a fused
tensor, and for HPD's on-chip factor, each from its own streams."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import torch

from romer.noise.config import NoiseConfig
from romer.noise.outliers import DigitalOutliers, split_outliers
from romer.noise.periphery import ColumnErrors
from romer.noise.physics import DevicePhysics
from romer.noise.streams import stream


def program_matrix(physics: DevicePhysics, config: NoiseConfig, target: torch.Tensor, seed: int, key: tuple,
                   device) -> tuple[torch.Tensor, torch.Tensor, ColumnErrors | None]:
    """(weights as the arrays hold them, their scales, the periphery's errors) for `target` [out, in], from the
    streams (seed, *key) and (seed, *key, "periphery"). In weights mode the ADC column gain folds exactly into the
    weights, so only the offsets stay per forward."""
    noisy, scales = physics.program(target, lambda effect: stream(seed, *key, device=device) if effect == "programming"
                                    else stream(seed, *key, effect, device=device))
    errors = physics.periphery.draw(target.shape[-2], scales.shape[-1],
                                    stream(seed, *key, "periphery", device=device), device)
    if errors is not None and errors.gain is not None and config.mode == "weights":
        noisy = noisy * physics.mapping.expand(errors.gain, target.shape[-1])
        errors = ColumnErrors(None, errors.offset_lsb)
    return noisy, scales, errors


def program_with_outliers(physics: DevicePhysics, config: NoiseConfig, target: torch.Tensor, fraction: float,
                          seed: int, key: tuple, device
                          ) -> tuple[torch.Tensor, torch.Tensor, ColumnErrors | None, DigitalOutliers | None]:
    """`program_matrix` of what stays in the arrays once the outliers (`fraction` of each scale segment) are held
    in digital units; the returned weights hold what the products see (arrays plus the exact digital part), and the
    outliers are returned so that the tile-level path can take them out again."""
    digital = None
    if fraction > 0:
        target, digital = split_outliers(target, fraction, physics.mapping)
    noisy, scales, errors = program_matrix(physics, config, target, seed, key, device)
    if digital is not None and len(digital):
        noisy = noisy + digital.dense(noisy.device)
    return noisy, scales, errors, digital


@contextmanager
def slot_workers(device) -> Iterator[ThreadPoolExecutor]:
    """Threads that program the expert slots of one fused tensor. On a CPU a random generator fills its tensor on one
    core, so two slots programmed side by side keep both cores busy (`ROMER_PROGRAMMING_THREADS`, default: torch's
    thread count, at most 4); on an accelerator one at a time (its kernels are parallel already). Every slot draws
    from streams of its own, so the bits do not depend on the number of threads."""
    with ThreadPoolExecutor(max_workers=slot_threads(device), thread_name_prefix="romer-program") as pool:
        yield pool


def slot_threads(device) -> int:
    """How many expert slots are programmed at once on `device` (each holds its own scratch)."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, int(os.environ.get("ROMER_PROGRAMMING_THREADS", min(4, torch.get_num_threads()))))
