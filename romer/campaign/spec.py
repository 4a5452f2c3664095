"""`RunSpec`: one campaign (model × data × chip × seeds × methods × tasks), from flags or a YAML file.

Every field that changes a number is part of the fingerprint; an output folder holding results of
another fingerprint is refused (unless forced), so a resumed run never mixes two experiments.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from romer.errors import RomerError
from romer.validation import build


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("romer-tiny", description="romer-tiny, a local folder or a hub id")
    data: str = Field("stdlib", description="evaluation corpus")
    split: Optional[str] = Field(None, description="evaluation split; default: the corpus's test split")
    calib_data: Optional[str] = Field(None, description="calibration text; default: the calib split of `data`")
    noise: list[str] = Field(["cim-80c"], description="chip specs (preset[:k=v] or file.yaml); a sweep takes several")
    strengths: list[float] = Field([1.0], description="noise strength multipliers (sweeps)")
    seeds: list[int] = Field([0, 1, 2], description="chip instances")
    methods: list[str] = Field(["none", "romer", "best"], description="calibration methods")
    calibration: dict = Field(default_factory=dict, description="RomerConfig options for every method")
    tasks: list[str] = Field(default_factory=list, description="lm-eval task names (zero-shot)")
    task_limit: Optional[int] = Field(None, ge=1, description="documents per task (None: all)")
    max_tokens: Optional[int] = Field(None, ge=2, description="evaluate the first N tokens of the split")
    window: Optional[int] = Field(None, ge=2, description="tokens per window; default: model context ≤ 2048")
    stride: Optional[int] = Field(None, ge=1, description="default: the window (disjoint windows)")
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
        return seeds

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, size):
        if size != "auto" and size < 1:
            raise ValueError("batch_size must be a positive integer or auto")
        return size

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        from romer.calibration import method_names

        unknown = [m for m in methods if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; methods are {', '.join(method_names())}")
        return ["none"] + [m for m in methods if m != "none"]  # the noisy baseline is always measured

    def fingerprint(self) -> str:
        """What the numbers depend on (not where they run)."""
        fields = self.model_dump(exclude={"device", "seeds"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def run_spec(**fields) -> RunSpec:
    """A RunSpec from the fields given (None: the default), or a one-line RomerError naming the first bad one."""
    return build(RunSpec, {k: v for k, v in fields.items() if v is not None}, "run option",
                 "see `romer run --help` for the keys a config may hold")


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
