"""`Calibration`: what `calibrate_` did to one model, how to undo it, and its JSON record.

Its life is tied to its chip: restoring the chip removes the calibration first, and removing it after that is a
no-op (never a change to the clean model)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from romer.calibration.config import CalibrationConfig
from romer.calibration.replacement import Replacement, write_replacement
from romer.calibration.router import LayerTransform
from romer.errors import RomerError
from romer.moe.adapter import MoeAdapter, adapter_for
from romer.noise.chip import ChipHandle
from romer.noise.layout import ChipLayout, parse_digital_key


@dataclass
class Calibration:
    model: nn.Module
    config: CalibrationConfig
    chip: ChipHandle | None
    adapter: MoeAdapter = field(init=False)
    replacements: list[Replacement] = field(default_factory=list)
    transforms: dict[int, LayerTransform] = field(default_factory=dict)
    placed: ChipLayout = field(default_factory=ChipLayout)  # what this calibration moved off the arrays
    corrections: dict = field(default_factory=dict)  # tensor name → ColumnCorrection (retune)
    norms: dict = field(default_factory=dict)        # parameter name → (norm gain, its value before) (retune)
    report: dict = field(default_factory=dict)  # statistics and choices, for the record
    _undo: list[Callable[[], None]] = field(default_factory=list)
    _on_remove: list[Callable[[], None]] = field(default_factory=list)
    removed: bool = False

    def __post_init__(self) -> None:
        self.adapter = adapter_for(self.model)
        self.layers = self.adapter.layers(self.model)
        if self.chip is not None and self.chip.restored:
            self.chip = None
        self._tie_to_chip()

    def _tie_to_chip(self) -> None:
        """Restoring the chip removes this calibration first (its undo needs the live chip)."""
        if self.chip is not None:
            self.on_remove(self.chip.before_restore(self.remove))

    # ---- where the calibration placed weights (ChipLayout) ----------------------------------
    @property
    def digital(self) -> list[str]:
        """The tensors (`name`) and expert slots (`name[slot]`) this calibration moved to the digital periphery."""
        return self.placed.digital_keys()

    @property
    def decomposed(self) -> list[str]:
        """The matrices (`name`) and expert slots (`name[slot]`) this calibration holds as HPD's factors."""
        return self.placed.as_dict()["decomposed"]

    @property
    def outliers(self) -> dict[str, float]:
        """Tensor name → share of each scale segment this calibration holds in digital units as outliers."""
        return dict(self.placed.outliers)

    def layout(self) -> ChipLayout:
        """What this calibration placed off the arrays, for a chip that takes it on (`apply_noise_`)."""
        return self.placed

    # ---- changes, each with its undo -------------------------------------------------------
    def replace(self, replacement: Replacement) -> None:
        self._undo.extend(write_replacement(self.adapter, self.layers[replacement.layer], replacement, self.chip))
        self.replacements.append(replacement)

    def transform(self, layer: int) -> LayerTransform:
        """This layer's routing transform, installed the first time it is asked for; edit it in place."""
        if layer not in self.transforms:
            transform = self.transforms[layer] = LayerTransform()
            remove = self.adapter.install_routing(self.layers[layer], transform)

            def undo() -> None:
                remove()
                self.transforms.pop(layer, None)

            self._undo.append(undo)
        return self.transforms[layer]

    def attach_correction(self, name: str, correction) -> None:
        """Digital corrections after one tensor's ADCs (retune); the conductances stay as programmed."""
        self.chip.attach_correction(name, correction)
        self.corrections[name] = correction

        def undo() -> None:
            self.chip.attach_correction(name, None)
            self.corrections.pop(name, None)

        self._undo.append(undo)

    def fitted_parameters(self) -> list[torch.Tensor]:
        """The digital numbers this calibration fitted and a refresh may fit again: every correction's parts (gains,
        offsets, adapters), the norm gains it re-set, and the routers' logit biases."""
        tensors = [p for correction in self.corrections.values() for p in correction.parameters()]
        tensors += [param for param, _ in self.norms.values()]
        tensors += [t.bias for _, t in sorted(self.transforms.items()) if isinstance(t.bias, torch.nn.Parameter)]
        return tensors

    def keep_values(self, tensors: list[torch.Tensor]) -> None:
        """Their values now come back on undo (a refresh that changes them in place is undone like any step)."""
        before = [t.detach().clone() for t in tensors]

        def undo() -> None:
            for tensor, value in zip(tensors, before):
                tensor.data.copy_(value)

        self._undo.append(undo)

    def pending_correction(self, name: str, correction) -> None:
        """A correction of a loaded calibration, attached when the model is put on a chip (`apply_noise_`)."""
        self.corrections[name] = correction

        def undo() -> None:
            if self.chip is not None and not self.chip.restored:
                self.chip.attach_correction(name, None)
            self.corrections.pop(name, None)

        self._undo.append(undo)

    def assign(self, target, attribute: str, value) -> None:
        """`setattr(target, attribute, value)`, undone by putting the previous value back."""
        previous = getattr(target, attribute)
        setattr(target, attribute, value)
        self._undo.append(lambda: setattr(target, attribute, previous))

    def retune_norm(self, name: str, param: torch.nn.Parameter) -> None:
        """A norm gain (a digital parameter) that this calibration re-sets; its value before is kept for undo."""
        if name in self.norms:  # re-set by a later step too: the value before the calibration stays the one kept
            previous = param.detach().clone()

            def undo() -> None:
                param.data.copy_(previous)
        else:
            self.norms[name] = (param, param.detach().clone())

            def undo() -> None:
                param.data.copy_(self.norms.pop(name)[1])

        self._undo.append(undo)

    @contextmanager
    def original_norms(self) -> Iterator[None]:
        """The norm gains as they were before this calibration, for the duration of the block (saving the clean
        weights of a checkpoint)."""
        tuned = {name: param.detach().clone() for name, (param, _) in self.norms.items()}
        with torch.no_grad():
            for param, original in self.norms.values():
                param.copy_(original)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, (param, _) in self.norms.items():
                    param.copy_(tuned[name])

    @contextmanager
    def clean_twin(self) -> Iterator[None]:
        """The chip's clean twin with this calibration installed, for the duration of the block: the clean weights
        (`ChipHandle.suspended`, which also takes the corrections after the ADCs off), the norm gains as they were
        before the calibration, and every routing transform bypassed. A calibration that re-programmed experts
        (ROMER's replacements) is refused: its twin would hold the copies."""
        if self.chip is None or self.chip.restored:
            raise RomerError("the clean twin needs the calibration's chip, live")
        if self.replacements:
            raise RomerError(f"a '{self.config.method}' calibration re-programmed experts, so the model it is installed "
                             "on is not the clean twin; take the clean twin's outputs before calibrating")
        bypassed = {index: dict(vars(transform)) for index, transform in self.transforms.items()}
        with self.chip.suspended(), self.original_norms():
            for transform in self.transforms.values():
                transform.__dict__.update(vars(type(transform)()))  # a fresh transform: the identity
            try:
                yield
            finally:
                for index, fields in bypassed.items():
                    self.transforms[index].__dict__.update(fields)

    def mark(self) -> int:
        """A point to roll back to: everything changed after it can be undone alone (`rollback`)."""
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        with torch.no_grad():
            while len(self._undo) > mark:
                self._undo.pop()()

    def make_digital(self, name: str, slot: int | None = None) -> None:
        """One on-chip tensor (or one expert slot of a fused tensor) moved to the digital periphery."""
        self.chip.make_digital(name, slot=slot)
        before, self.placed = self.placed, self.placed.with_digital(name, True, slot)

        def undo() -> None:
            self.chip.make_digital(name, False, slot=slot)
            self.placed = before

        self._undo.append(undo)

    def decompose(self, name: str, slot: int | None = None) -> None:
        """One on-chip matrix (or, with `slot`, one expert slot of a fused tensor) held as its SVD factors, U·Σ on the
        chip and Vᵀ in digital units (HPD)."""
        self.chip.decompose(name, slot=slot)
        before, self.placed = self.placed, self.placed.with_decomposed(name, slot=slot)

        def undo() -> None:
            self.chip.decompose(name, False, slot=slot)
            self.placed = before

        self._undo.append(undo)

    def split_outliers(self, name: str, fraction: float) -> None:
        """One on-chip tensor programmed again with its outlier weights held in digital units (`noise/outliers.py`)."""
        on_chip_before = self.chip.outlier_fraction(name)
        self.chip.split_outliers(name, fraction)
        before, self.placed = self.placed, self.placed.with_outliers(name, fraction)

        def undo() -> None:
            self.chip.split_outliers(name, on_chip_before)
            self.placed = before

        self._undo.append(undo)

    def choose_outliers(self, candidates: dict, score: Callable[[], float]) -> tuple[object, dict]:
        """Program the chip under each candidate split (key → {tensor name: outlier fraction}) in turn, straight from
        the one before (no return to the start between them: each tensor is programmed once per candidate), score
        each with `score()` (lower is better), and keep the best: (its key, every score). One undo returns every
        tensor to its fraction before."""
        names = sorted({name for fractions in candidates.values() for name in fractions})
        on_chip_before = {name: self.chip.outlier_fraction(name) for name in names}
        placed_before = self.placed
        scores = {}
        for key, fractions in candidates.items():
            for name, fraction in fractions.items():
                self.chip.split_outliers(name, fraction)
            scores[key] = score()
        best = min(scores, key=scores.get)
        if best != key:
            for name, fraction in candidates[best].items():
                self.chip.split_outliers(name, fraction)
        for name, fraction in candidates[best].items():
            self.placed = self.placed.with_outliers(name, fraction)

        def undo() -> None:
            for name, fraction in on_chip_before.items():
                self.chip.split_outliers(name, fraction)
            self.placed = placed_before

        self._undo.append(undo)
        return best, scores

    def digital_weights(self) -> int:
        """Every digital number this calibration adds or re-sets, in weights: the on-chip weights it moved to the
        digital periphery, the digital factors Vᵀ of the matrices it decomposed, its outlier weights (two numbers
        each: the value and its position), every digital parameter after the ADCs (gains, offsets, adapters), the
        norm gains it re-set, and what its routing transforms store (statistics, fences, biases, replica pairs). One
        count for every method, so that methods compare at equal digital share (`digital_share`)."""
        moved = 0
        if self.chip is not None and not self.chip.restored:
            for key in self.digital:
                name, slot = parse_digital_key(key)
                moved += self.chip.size(name) // (self.chip.shape(name)[0] if slot is not None else 1)
            moved += sum(self.chip.factor_weights(name) for name in self.placed.decomposed)
            moved += sum(self.chip.factor_weights(name, slot) for name, slot in self.placed.decomposed_slots)
            moved += 2 * sum(self.chip.outlier_weights(name) for name, _ in self.placed.outliers)
        return (moved + sum(c.stored_parameters for c in self.corrections.values())
                + sum(param.numel() for param, _ in self.norms.values())
                + sum(t.stored_parameters for t in self.transforms.values()))

    def digital_share(self) -> float:
        """`digital_weights()` as a fraction of the chip's weights (every weight the chip was asked to hold: the one
        denominator of every share and every budget)."""
        return self.digital_weights() / self.chip.total_parameters if self.chip is not None else 0.0

    def remove(self) -> None:
        """Undo everything, last change first: the model is as it was before `calibrate_`. After the chip was
        restored this is a no-op: restoring removed the calibration already."""
        if self.removed:
            return
        with torch.no_grad():
            for undo in reversed(self._undo):
                undo()
        self._undo.clear()
        self.removed = True
        for function in self._on_remove:
            function()

    def on_remove(self, function: Callable[[], None]) -> None:
        """Call `function` once this calibration is removed."""
        self._on_remove.append(function)

    # ---- what a chip asks of a loaded calibration (apply_noise_) ------------------------------
    def decomposed_names(self) -> list[str]:
        """The tensors this calibration holds as HPD's factors."""
        return self.decomposed

    def correction_items(self) -> list[tuple[str, object]]:
        """(tensor name, its digital corrections) for every corrected tensor."""
        return list(self.corrections.items())

    def routing_parameters(self) -> int:
        """What this calibration's routing transforms store (statistics, fences, biases, replica pairs): each is read
        once per token per MoE layer it transforms (romer.cost)."""
        return sum(t.stored_parameters for t in self.transforms.values())

    def bind_chip(self, chip: ChipHandle) -> None:
        """The chip a loaded calibration now sits on (its digital tensors and corrections are installed there)."""
        if self.chip is None or self.chip.restored:
            self.chip = chip
            self._tie_to_chip()

    def __enter__(self) -> "Calibration":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ---- record ----------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return {
            "method": self.config.method,
            "config": self.config.model_dump(mode="json"),
            "replacements": [r.as_dict() for r in self.replacements],
            "router": {str(layer): t.as_dict() for layer, t in sorted(self.transforms.items()) if t.active},
            **self.placed.as_dict(),  # digital, decomposed, outliers
            "digital_share": self.digital_share() if self.chip is not None and not self.chip.restored else None,
            "corrections": {name: {"slots": c.slots, "out": c.out_dim, "in": c.in_dim, "columns": c.gain is not None,
                                   "offsets": c.offset is not None,
                                   "rank": c.rank, "per_matrix": c.per_matrix} for name, c in self.corrections.items()},
            "norms": list(self.norms),
            "chip": None if self.chip is None else self.chip.describe(),
            "report": self.report,
        }
