"""`RunSpec`: one campaign (model × data × chip × seeds × methods × tasks), from flags or a YAML file.

Every field that changes a number is part of the fingerprint; an output folder holding results of
another fingerprint is refused (unless forced), so a resumed run never mixes two experiments.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticKnownError

from romer.errors import RomerError
from romer.validation import build


MAX_VARIED_FIELDS = 2
MAX_SEEDS = 10_000       # chip instances in one campaign
MAX_WINDOW = 131_072     # tokens per window
MAX_BATCH = 4096         # windows per forward pass


@dataclass(frozen=True)
class ChipPoint:
    """One simulated chip of a campaign: a noise spec, a strength, and the varied fields' values there."""

    noise: str
    strength: float
    values: dict


def with_override(noise: str, field: str, value) -> str:
    """`noise` with one more `field=value` override, in the syntax `parse_noise_spec` reads."""
    return f"{noise}{',' if ':' in noise else ':'}{field}={value}"


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("romer-tiny", description="romer-tiny, a local folder or a hub id")
    data: str = Field("stdlib", description="evaluation corpus")
    split: Optional[str] = Field(None, description="evaluation split; default: the corpus's test split")
    calib_data: Optional[str] = Field(None, description="calibration text; default: the calib split of `data`")
    noise: list[str] = Field(["cim-80c"], description="chip specs (preset[:k=v] or file.yaml); a sweep takes several")
    strengths: list[float] = Field([1.0], description="noise strength multipliers (sweeps)")
    vary: dict[str, list[Union[int, float, str]]] = Field(
        default_factory=dict, description="noise fields swept over these values, one or two fields (`strength` is "
                                          "one): every chip of `noise` at each value, for the regime map")
    seeds: list[int] = Field([0, 1, 2], description="chip instances")
    variants: dict[str, dict] = Field(default_factory=dict, description="labelled method variants, label → {method, "
                                      "settings}; written for you from `label=method@key=value` entries of methods")
    methods: list[str] = Field(["none", "romer", "tuned"], description="calibration methods or labelled variants "
                                                                      "(label=method@key=value@...); `best` is "
                                                                      "tuned's former name")
    calibration: dict = Field(default_factory=dict, description="CalibrationConfig options; each method takes those "
                                                                "it reads")
    tasks: list[str] = Field(default_factory=list, description="lm-eval task names (zero-shot)")
    task_limit: Optional[int] = Field(None, ge=1, description="documents per task (None: all)")
    max_tokens: Optional[int] = Field(None, ge=2, description="evaluate the first N tokens of the split")
    window: Optional[int] = Field(None, ge=2, le=MAX_WINDOW, description="tokens per window; default: model context "
                                                                        "≤ 2048")
    stride: Optional[int] = Field(None, ge=1, le=MAX_WINDOW, description="default: the window (disjoint windows)")
    routing_tokens: int = Field(16384, ge=0, description="evaluation tokens used for load and top-k agreement")
    clean_cost: bool = Field(True, description="also apply each method to the clean model")
    batch_size: Union[Literal["auto"], int] = Field(8, description="windows per forward pass, or auto: the "
                                                   "largest that fits the device (romer estimate)")
    device: str = Field("cpu", description="cpu, cuda, cuda:N, or auto (device_map over all GPUs)")
    dtype: str = "float32"
    trust_remote_code: bool = False

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct non-negative integers")
        if len(seeds) > MAX_SEEDS:
            raise ValueError(f"{len(seeds):,} seeds: at most {MAX_SEEDS:,} chip instances in one campaign")
        return seeds

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch(cls, size):
        if size == "auto":
            return size
        if isinstance(size, int) and not isinstance(size, bool):
            if size < 1:
                raise PydanticKnownError("greater_than_equal", {"ge": 1})
            if size > MAX_BATCH:
                raise PydanticKnownError("less_than_equal", {"le": MAX_BATCH})
        return size

    @field_validator("vary")
    @classmethod
    def _vary(cls, vary: dict) -> dict:
        from romer.noise import NoiseConfig

        if len(vary) > MAX_VARIED_FIELDS:
            raise ValueError(f"vary at most {MAX_VARIED_FIELDS} fields at once, got {len(vary)}")
        for field, values in vary.items():
            if field not in NoiseConfig.model_fields or field in ("name", "roles", "prog_coeffs_us"):
                raise ValueError(f"'{field}' is not a noise field that can be swept; `romer presets` lists them")
            if not values or len(set(map(str, values))) != len(values):
                raise ValueError(f"give distinct values for '{field}'")
        return vary

    @model_validator(mode="before")
    @classmethod
    def _labelled(cls, data):
        """`label=method@k=v` entries (or mappings) of `methods` become their labels, and `variants` records each."""
        from romer.calibration.registry import ALIASES, canonical_method, method_names
        from romer.campaign.variants import check_variants, parse_variant

        if not isinstance(data, dict) or not isinstance(data.get("methods"), list):
            return data
        data = dict(data)
        variants = {label: dict(v) for label, v in (data.get("variants") or {}).items()}
        parsed = [parse_variant(entry) for entry in data["methods"]]
        check_variants([v for v in parsed if v.label not in variants], set(method_names()) | set(ALIASES))
        for variant in parsed:
            if variant.label != variant.method or variant.settings:
                if variant.method not in method_names() and variant.method not in ALIASES:
                    raise RomerError(f"unknown method {variant.method!r} in variant {variant.label!r}; methods are "
                                     f"{', '.join(method_names())}")
                variants[variant.label] = {"method": canonical_method(variant.method), "settings": variant.settings}
        data["methods"], data["variants"] = [v.label for v in parsed], variants
        return data

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str], info) -> list[str]:
        from romer.calibration.registry import ALIASES, canonical_method, method_names

        variants = info.data.get("variants") or {}
        unknown = [m for m in methods if m not in method_names() and m not in ALIASES and m not in variants]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; methods are {', '.join(method_names())}, or a labelled "
                             "variant label=method@key=value")
        methods = list(dict.fromkeys(m if m in variants else canonical_method(m) for m in methods))
        return ["none"] + [m for m in methods if m != "none"]  # the noisy baseline is always measured

    def method_of(self, label: str) -> str:
        """The registered method behind a label (a plain method is its own label)."""
        return self.variants[label]["method"] if label in self.variants else label

    def settings_of(self, label: str) -> dict:
        """The settings a labelled variant sets over the campaign's options (none for a plain method)."""
        return dict(self.variants[label].get("settings") or {}) if label in self.variants else {}

    @model_validator(mode="after")
    def _one_way_to_vary_strength(self) -> "RunSpec":
        if "strength" in self.vary and self.strengths != [1.0]:
            raise ValueError("strength is both varied and given as strengths; use one of --vary strength=... "
                             "and --strengths")
        return self

    def chips(self) -> list[ChipPoint]:
        """Every chip the campaign simulates, in order: each noise spec × the varied values (or × strengths)."""
        fields = list(self.vary)
        points = []
        for noise in self.noise:
            for combination in itertools.product(*(self.vary[f] for f in fields)):
                values = dict(zip(fields, combination))
                spec = noise
                for field, value in values.items():
                    if field != "strength":
                        spec = with_override(spec, field, value)
                strengths = [float(values["strength"])] if "strength" in values else self.strengths
                points.extend(ChipPoint(spec, strength, values) for strength in strengths)
        return points

    def fingerprint(self, methods: list[str] | None = None) -> str:
        """What the numbers depend on (not where they run)."""
        fields = self.model_dump(exclude={"device", "seeds"} | ({"vary"} if not self.vary else set())
                                 | ({"variants"} if not self.variants else set()))
        if methods is not None:
            fields["methods"] = methods
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprints(self) -> set[str]:
        """This spec's fingerprint, and the one it had with its methods under their former names (a folder made
        before a rename resumes)."""
        from romer.calibration.registry import former_names

        return {self.fingerprint(), self.fingerprint([(former_names(m) or [m])[0] for m in self.methods])}


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or `0-4` (inclusive) or a mix: `0-2,7`."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        try:
            span = range(int(first), int(last) + 1) if dash else [int(first)]
        except ValueError:
            raise RomerError(f"cannot read seeds '{text}'; write them as 0,1,2 or 0-4") from None
        if len(seeds) + len(span) > MAX_SEEDS:
            raise RomerError(f"--seeds {text} names {len(seeds) + len(span):,} chip instances; at most "
                             f"{MAX_SEEDS:,} fit one campaign")
        seeds.extend(span)
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise RomerError(f"seeds '{text}' must be distinct non-negative integers, e.g. 0,1,2 or 0-4")
    return seeds


def run_spec(**fields) -> RunSpec:
    """A RunSpec from the fields given (None: the default), or a one-line RomerError naming the first bad one."""
    return build(RunSpec, {k: v for k, v in fields.items() if v is not None}, "run option",
                 "see `romer run --help` for the keys a config may hold", flags=True)


def load_run_file(path: str) -> dict:
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as error:
        raise RomerError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError:
        raise RomerError(f"config {path} is not valid YAML; fix its syntax") from None
    if not isinstance(data, dict):
        raise RomerError(f"config {path} must be a mapping of option: value")
    return data
