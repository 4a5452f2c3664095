"""One simulated chip instance of one model: `apply_noise_` programs it, `ChipHandle` is its public face.

    apply.py         apply_noise_: checked arguments, the backup chosen, the chip programmed
    handle.py        ChipHandle: lookups, calibration's changes, lifetime (move_to, suspended, restore)
    holdings.py      ChipHoldings: what the chip holds and where (tensors, clean backup, targets, layout, corrections)
    programmer.py    ChipProgrammer: writes weights, programmed or clean, and each tensor's forward path
    experts_path.py  ExpertsPath: how fused experts are computed while the model sits on the chip
    seats.py         which chip each model sits on (chip_of)
"""

from romer.noise.chip.apply import apply_noise_
from romer.noise.chip.handle import ChipHandle
from romer.noise.chip.holdings import SMALL_BACKUP_BYTES, choose_backup
from romer.noise.chip.programmer import needs_forward_path
from romer.noise.chip.seats import chip_of

__all__ = ["SMALL_BACKUP_BYTES", "ChipHandle", "apply_noise_", "chip_of", "choose_backup", "needs_forward_path"]
