"""The field's data-free remedy: drift compensation read out with a known input, as IBM aihwkit does it
(`aihwkit/inference/compensation/drift.py`, `GlobalDriftCompensation` and `PerColumnDriftCompensation`).

After programming, each on-chip matrix (each expert slot of a fused tensor) is read out with aihwkit's probe, the
one-hot inputs (the identity matrix: every input line alone at full scale), through the chip as it computes
(conductances, periphery, analog path). aihwkit's readout is the mean absolute output, per output column
(`PerColumnDriftCompensation`) or over the whole tile (`Global...`); its reference is the same readout of the
exact weights (`GlobalDriftCompensationWithExactReference`), which a post-training calibration has in software.
The digital gain after the ADCs is reference / readout, per column or one per tensor (`ColumnCorrection`'s gain;
its offset stays zero). No calibration text is read. Digital cost: one gain per output column, or one per matrix
(each expert slot of a fused tensor is a matrix of its own).
"""

from __future__ import annotations

import torch

from romer.calibration.registry import Method, register_method
from romer.calibration.step import Step, register_step
from romer.noise.digital import ColumnCorrection

READOUT_FLOOR = 1e-4  # aihwkit clamps a readout below this (a dead column is not blown up)


def readout(outputs: torch.Tensor, per_column: bool) -> torch.Tensor:
    """aihwkit's readout of a tile's outputs for the probe [probes, out]: mean |y| per column, or over everything."""
    values = outputs.abs().mean(dim=0) if per_column else outputs.abs().mean()
    return values.clamp(min=READOUT_FLOOR)


def column_gain(chip, name: str, slot: int | None, probe: torch.Tensor, per_column: bool) -> torch.Tensor:
    """reference / readout − 1 for one matrix: the gain a ColumnCorrection holds (1 + g multiplies the outputs)."""
    measured = readout(chip.read_out(name, slot, probe).float(), per_column)
    exact = readout(chip.clean_value(name, slot).to(probe.device).float().t(), per_column)
    return exact / measured - 1


@torch.no_grad()
def reread(calibration, chip) -> None:
    """aihwkit re-reads its reference at every read time, as a deployed chip does: each compensated matrix is read
    out again with the probe where the chip stands now, and its gains set anew (no calibration text)."""
    for name, correction in calibration.correction_items():
        shape = chip.shape(name)
        slots, in_dim = (shape[0] if len(shape) == 3 else None), shape[-1]
        per_column = not correction.per_matrix
        probe = torch.eye(in_dim, device=correction.gain.device)
        for slot in range(slots) if slots is not None else (None,):
            gain = column_gain(chip, name, slot, probe, per_column).expand(correction.out_dim)
            (correction.gain if slot is None else correction.gain[slot]).copy_(gain)


class DriftCompensation(Step):
    """Per-column (or global) digital gains from a one-hot read-out of every on-chip matrix against its exact weights."""

    options = ()

    def __init__(self, name: str, per_column: bool) -> None:
        self.name, self.per_column = name, per_column

    def enabled(self, config, chip) -> bool:
        return chip is not None  # the clean model needs no compensation

    @torch.no_grad()
    def run(self, context) -> None:
        chip, added = context.chip, 0
        for name in chip.on_chip_names():
            module, attribute = chip.module_of(name)
            weight = getattr(module, attribute)
            shape = chip.shape(name)
            slots, (out_dim, in_dim) = (shape[0] if len(shape) == 3 else None), shape[-2:]
            probe = torch.eye(in_dim, device=weight.device, dtype=weight.dtype)
            correction = ColumnCorrection(out_dim, in_dim, slots, columns=True, rank=0, device=weight.device,
                                          per_matrix=not self.per_column, offsets=False)  # gains only
            for slot in range(slots) if slots is not None else (None,):
                gain = column_gain(chip, name, slot, probe, self.per_column).expand(out_dim)
                (correction.gain if slot is None else correction.gain[slot]).copy_(gain)
            correction.requires_grad_(False)
            context.calibration.attach_correction(name, correction)
            added += (slots or 1) * (out_dim if self.per_column else 1)
        context.calibration.report["compensate"] = {"per_column": self.per_column, "parameters_added": added,
                                                    "chip_weights": chip.total_parameters,
                                                    "digital_share": added / chip.total_parameters}


register_step(DriftCompensation("compensate-column", per_column=True))
register_step(DriftCompensation("compensate-global", per_column=False))
register_method(Method("compensate", "the field's data-free remedy (IBM aihwkit's PerColumnDriftCompensation): one "
                                     "digital gain per output column from a one-hot read-out of each programmed matrix "
                                     "against its exact weights", steps=("compensate-column",), on_move=reread))
register_method(Method("compensate-global", "IBM aihwkit's GlobalDriftCompensation with an exact reference: one "
                                            "digital gain per on-chip tensor from the same read-out",
                       steps=("compensate-global",), on_move=reread))
