"""Labelled method variants: one calibration method run several times in one campaign, each under its own settings.

    romer run --methods none,outlier-retune,or2=outlier-retune@retune_budget=0.01@outlier_fraction=0.005

An entry of `methods` is a method's name, or `label=method@key=value@key=value`: the label keys the results
(results.jsonl, the summary, the report), and the settings override the campaign's `--set` options for that
variant only. In YAML an entry may also be a mapping:

    methods:
      - none
      - outlier-retune
      - {label: or2, method: outlier-retune, set: {retune_budget: 0.01}}

Every result records the method and the settings it resolved to. A label may not be the name of a registered
method (a reader would take it for that method at its defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from romer.assignments import scalar, split_assignment
from romer.errors import RomerError

LABEL_SEPARATOR = "="
SETTING_SEPARATOR = "@"


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    settings: dict = field(default_factory=dict)

    def entry(self) -> str:
        """The one-string form, which `parse_variant` reads back."""
        if not self.settings and self.label == self.method:
            return self.method
        settings = "".join(f"{SETTING_SEPARATOR}{k}={v}" for k, v in self.settings.items())
        return f"{self.label}{LABEL_SEPARATOR}{self.method}{settings}"

    def as_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "settings": dict(self.settings)}


def parse_variant(entry) -> Variant:
    """A `methods` entry (a name, `label=method@k=v...`, or a mapping with label, method and set) as a Variant."""
    if isinstance(entry, dict):
        unknown = set(entry) - {"label", "method", "set"}
        if unknown or "method" not in entry:
            raise RomerError(f"a method variant is a mapping of label, method and set (got {sorted(entry)}); write "
                             "{label: or2, method: outlier-retune, set: {retune_budget: 0.01}}")
        settings = entry.get("set") or {}
        if not isinstance(settings, dict):
            raise RomerError(f"the settings of variant {entry.get('label')!r} must be a mapping of option: value")
        method = str(entry["method"])
        return Variant(str(entry.get("label") or method), method, dict(settings))
    if not isinstance(entry, str) or not entry.strip():
        raise RomerError(f"cannot read method {entry!r}; write a method name or label=method@key=value")
    text = entry.strip()
    head, *assignments = text.split(SETTING_SEPARATOR)
    label, eq, method = head.partition(LABEL_SEPARATOR)
    if not eq:
        label = method = head
        if assignments:
            raise RomerError(f"method variant {text!r} has settings but no label; write label={text}")
    error = "cannot read '{item}' in method variant " + repr(text) + "; write label=method@key=value@key=value"
    settings = dict((key, scalar(key, raw)) for key, raw in (split_assignment(a, error) for a in assignments))
    if not label.strip() or not method.strip():
        raise RomerError(f"method variant {text!r} needs both a label and a method: label=method@key=value")
    return Variant(label.strip(), method.strip(), settings)


def check_variants(variants: list[Variant], known: set[str]) -> None:
    """Labels are unique; a label that differs from its method is not another method's name."""
    seen: set[str] = set()
    for variant in variants:
        if variant.label in seen:
            raise RomerError(f"method label {variant.label!r} is given twice; give each variant its own label")
        seen.add(variant.label)
        if variant.label != variant.method and variant.label in known:
            raise RomerError(f"label {variant.label!r} is the name of a method; choose a label that is not one "
                             f"(e.g. {variant.label}-2)")
