"""`AgeSpec`: what `romer age` measures, validated: the chip, the methods, the moment of calibration and the grid of
(time since programming, temperature) it is read at, and how the monitor reads. `age_spec(**fields)` builds one or
refuses a bad field in one line."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from romer.campaign.spec import run_spec
from romer.diagnosis.monitor import FLOOR_WINDOWS
from romer.noise import Condition
from romer.validation import build


class AgeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("romer-tiny", description="romer-tiny, a local folder or a hub id")
    data: str = Field("stdlib", description="evaluation corpus (its test split)")
    calib_data: str | None = Field(None, description="calibration text; default: the calib split of `data`")
    noise: str = Field("pcm-cim", description="the chip: a preset with drift (time) and temperature terms")
    seeds: list[int] = Field([0], description="chip instances")
    methods: list[str] = Field(["none", "romer"], description="calibration methods (`none` is always measured)")
    calibration: dict = Field(default_factory=dict, description="CalibrationConfig options; each method takes those "
                                                                "it reads")
    calibrate_at: str = Field("1h@25C", description="the moment each method is calibrated at")
    times: list[str] = Field(["1h", "1mo", "1y"], description="times since programming the chip is read at")
    temperatures: list[float] = Field([25.0, 80.0], description="operating temperatures, °C")
    reference: bool = Field(True, description="also fit each method afresh at every condition")
    refresh_steps: int = Field(0, ge=0, le=100000, description="also refresh each fitted calibration at every later "
                                                                "condition with this many steps of retune's fit from "
                                                                "the values it carries (romer.refresh_); 0: off")
    refresh_lr: float | None = Field(None, gt=0, le=1, description="the refresh's Adam learning rate (default: the "
                                                                   "fit's own retune_lr)")
    refresh_batch_size: int | None = Field(None, ge=1, le=4096, description="sequences per refresh step (default: "
                                                                             "the calibration's batch_size)")
    max_tokens: int | None = Field(4096, ge=1, description="evaluation tokens (the first N of the test split)")
    monitor: Literal["probe", "live"] = Field("probe", description="what the drift monitor reads: a stored probe "
                                                                   "of calibration text, replayed at each check, or "
                                                                   "live traffic (windows of the evaluation split "
                                                                   "after the scored tokens)")
    monitor_tokens: int = Field(4096, ge=64, description="tokens the monitor reads per check (the probe, or each "
                                                         "live window)")
    monitor_floor_windows: int = Field(FLOOR_WINDOWS, ge=2, le=64, description="reads of the unchanged chip at "
                                                                              "calibration (probe replays, or live "
                                                                              "windows): the floor's mean and spread")
    alarm_tolerance: float = Field(0.01, ge=0, le=1, description="an alarm is false where recalibrating there would "
                                                              "lower perplexity by less than this share (needs the "
                                                              "recalibrated reference)")
    window: int | None = Field(None, ge=2)
    batch_size: int = Field(8, ge=1)
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False

    @field_validator("calibrate_at")
    @classmethod
    def _moment(cls, text: str) -> str:
        condition = Condition.parse(text)
        if condition.time_s is None or condition.temperature_c is None:
            raise ValueError("calibrate_at needs a time and a temperature, e.g. 1h@25C")
        return text

    @field_validator("times")
    @classmethod
    def _times(cls, times: list[str]) -> list[str]:
        for text in times:
            if Condition.parse(text).time_s is None:
                raise ValueError(f"{text!r} is not a time since programming (e.g. 1h, 1d, 1w, 1mo, 1y)")
        return times

    @field_validator("temperatures")
    @classmethod
    def _temperatures(cls, temperatures: list[float]) -> list[float]:
        for value in temperatures:
            if not math.isfinite(value):
                raise ValueError(f"{value} is not a temperature; give °C between -60 and 200")
            Condition(temperature_c=value)  # the physical range, in one line
        if len(set(temperatures)) != len(temperatures):
            raise ValueError(f"{temperatures} lists a temperature twice; give each once")
        return temperatures

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        return ["none"] + [m for m in methods if m != "none"]

    @model_validator(mode="after")
    def _reads_after_calibration(self) -> "AgeSpec":
        """Every read is a moment after programming and no earlier than the calibration: a chip cannot be read before
        it was calibrated, nor at the programming itself."""
        calibrated = Condition.parse(self.calibrate_at).time_s
        if calibrated <= 0:
            raise ValueError(f"calibrate_at {self.calibrate_at!r} is the programming itself; calibrate after it "
                             "(e.g. 1h@25C)")
        seen = set()
        for text in self.times:
            time = Condition.parse(text).time_s
            if time in seen:
                raise ValueError(f"times list {text!r} twice (or two spellings of one time); give each once")
            seen.add(time)
            if time < calibrated:
                raise ValueError(f"time {text!r} is before the calibration at {self.calibrate_at!r}; read the chip "
                                 f"at or after the moment it was calibrated")
        return self

    def conditions(self) -> list[str]:
        """Every condition of the grid, `calibrate_at` first (the reading the others are compared with)."""
        grid = [f"{time}@{_degrees(t)}C" for t, time in itertools.product(self.temperatures, self.times)]
        return [self.calibrate_at] + [c for c in grid if Condition.parse(c) != Condition.parse(self.calibrate_at)]

    def run_fields(self) -> dict:
        return {"model": self.model, "data": self.data, "calib_data": self.calib_data, "noise": [self.noise],
                "seeds": self.seeds, "methods": self.methods, "calibration": self.calibration,
                "window": self.window, "batch_size": self.batch_size,
                "device": self.device, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
                "routing_tokens": 0, "clean_cost": False}

    def run_spec(self):
        """The same model, data and calibration as a `romer run` spec (the work bench and each method's settings)."""
        return run_spec(**self.run_fields())

    def refreshes(self, method: str, condition: str) -> bool:
        """Whether `method`'s calibration is refreshed at `condition` (a fitted method, after calibration)."""
        return bool(self.refresh_steps) and method != "none" and condition != self.calibrate_at

    def fingerprint(self) -> str:
        fields = self.model_dump(exclude={"device", "seeds"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def fingerprints(self) -> set[str]:
        return {self.fingerprint()}


def _degrees(value: float) -> str:
    return f"{value:g}"


def age_spec(**fields) -> AgeSpec:
    """An AgeSpec from the fields given (None: the default), or a one-line RomerError naming the first bad one."""
    return build(AgeSpec, {k: v for k, v in fields.items() if v is not None}, "age option",
                 "see `romer age --help`", flags=True)
