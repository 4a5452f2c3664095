"""`ChipLayout`: where each weight of a chip lives, as one value.

A chip holds every weight of its tensors in conductances, except what a calibration moved elsewhere:

- whole tensors, or single expert slots of a fused expert tensor, computed in the digital periphery;
- matrices, or single expert slots of a fused expert tensor, held as HPD's factors (U·Σ in the arrays, Vᵀ in
  digital units);
- the largest weights of each scale segment held in digital units as outliers (a share per tensor).

The layout is immutable: a change makes a new one. A calibration records the layout it placed (saved with it,
adopted by `apply_noise_(..., calibration=...)`); `ChipHandle.other_instance` programs the other chips with the
current one; `restore` returns to the empty one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


def digital_key(name: str, slot: int | None) -> str:
    """How a record names a tensor (or one expert slot of it) in the digital periphery: `name` or `name[slot]`."""
    return name if slot is None else f"{name}[{slot}]"


def parse_digital_key(key: str) -> tuple[str, int | None]:
    if key.endswith("]") and "[" in key:
        name, slot = key[:-1].rsplit("[", 1)
        if slot.isdigit():
            return name, int(slot)
    return key, None


@dataclass(frozen=True)
class ChipLayout:
    digital: frozenset[str] = frozenset()                     # whole tensors in the digital periphery
    digital_slots: frozenset[tuple[str, int]] = frozenset()   # expert slots of fused tensors in the periphery
    decomposed: frozenset[str] = frozenset()                  # matrices held as HPD's factors
    outliers: tuple[tuple[str, float], ...] = ()              # (tensor, share of each scale segment), by name
    decomposed_slots: frozenset[tuple[str, int]] = frozenset()  # expert slots of fused tensors held as factors

    # ---- reading ------------------------------------------------------------------------------
    def is_digital(self, name: str, slot: int | None = None) -> bool:
        """Whether the tensor (or, with `slot`, that expert slot of a fused tensor) runs in the digital periphery."""
        return name in self.digital or (slot is not None and (name, slot) in self.digital_slots)

    def slots_of(self, name: str) -> set[int]:
        """The expert slots of a fused tensor kept in the digital periphery."""
        return {s for n, s in self.digital_slots if n == name}

    def is_decomposed(self, name: str, slot: int | None = None) -> bool:
        return name in self.decomposed if slot is None else (name, slot) in self.decomposed_slots

    def decomposed_slots_of(self, name: str) -> set[int]:
        """The expert slots of a fused tensor held as HPD's factors."""
        return {s for n, s in self.decomposed_slots if n == name}

    def outlier_fraction(self, name: str) -> float:
        return dict(self.outliers).get(name, 0.0)

    def digital_keys(self) -> list[str]:
        """Every whole tensor and expert slot in the periphery, as `digital_key` names them, in a stable order."""
        return sorted(self.digital) + [digital_key(n, s) for n, s in sorted(self.digital_slots)]

    @property
    def empty(self) -> bool:
        return not (self.digital or self.digital_slots or self.decomposed or self.outliers or self.decomposed_slots)

    # ---- changing (each a new layout) ---------------------------------------------------------
    def with_digital(self, name: str, digital: bool = True, slot: int | None = None) -> "ChipLayout":
        if slot is None:
            return replace(self, digital=self.digital | {name} if digital else self.digital - {name})
        key = (name, slot)
        return replace(self, digital_slots=self.digital_slots | {key} if digital else self.digital_slots - {key})

    def with_decomposed(self, name: str, decomposed: bool = True, slot: int | None = None) -> "ChipLayout":
        if slot is None:
            return replace(self, decomposed=self.decomposed | {name} if decomposed else self.decomposed - {name})
        key = (name, slot)
        return replace(self, decomposed_slots=self.decomposed_slots | {key} if decomposed
                       else self.decomposed_slots - {key})

    def with_outliers(self, name: str, fraction: float) -> "ChipLayout":
        kept = {n: f for n, f in self.outliers if n != name}
        if fraction > 0:
            kept[name] = float(fraction)
        return replace(self, outliers=tuple(sorted(kept.items())))

    def merged(self, other: "ChipLayout") -> "ChipLayout":
        """Both layouts' placements; `other`'s outlier share wins for a tensor both name."""
        return ChipLayout(self.digital | other.digital, self.digital_slots | other.digital_slots,
                          self.decomposed | other.decomposed,
                          tuple(sorted((dict(self.outliers) | dict(other.outliers)).items())),
                          self.decomposed_slots | other.decomposed_slots)

    def restricted_to(self, dims: dict[str, int]) -> "ChipLayout":
        """The placements that apply to a chip holding tensors `dims` (name → number of dimensions): a slot only of
        a fused tensor, a factor only of a matrix or of a fused tensor's slot, outliers only of a tensor none of whose
        matrices is decomposed."""
        decomposed = frozenset(n for n in self.decomposed if dims.get(n) == 2)
        decomposed_slots = frozenset((n, s) for n, s in self.decomposed_slots if dims.get(n) == 3)
        factored = decomposed | {n for n, _ in decomposed_slots}
        return ChipLayout(frozenset(n for n in self.digital if n in dims),
                          frozenset((n, s) for n, s in self.digital_slots if dims.get(n) == 3),
                          decomposed,
                          tuple((n, f) for n, f in self.outliers if n in dims and n not in factored),
                          decomposed_slots)

    # ---- record -------------------------------------------------------------------------------
    def as_dict(self) -> dict:
        """The layout in a calibration's record: `digital` and `decomposed` (keys, as `digital_key` names a tensor or
        one expert slot of it), `outliers` (name → share)."""
        decomposed = sorted(self.decomposed) + [digital_key(n, s) for n, s in sorted(self.decomposed_slots)]
        return {"digital": self.digital_keys(), "decomposed": decomposed, "outliers": dict(self.outliers)}

    @classmethod
    def from_dict(cls, record: dict) -> "ChipLayout":
        layout = cls()
        for key in record.get("digital", []):
            name, slot = parse_digital_key(key)
            layout = layout.with_digital(name, True, slot)
        for key in record.get("decomposed", []):
            name, slot = parse_digital_key(key)
            layout = layout.with_decomposed(name, True, slot)
        for name, fraction in record.get("outliers", {}).items():
            layout = layout.with_outliers(name, fraction)
        return layout
