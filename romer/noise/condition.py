"""`Condition`: the moment a chip is read at, time since programming and operating temperature.

    chip = apply_noise_(model, NoiseConfig.preset("pcm"), seed=0)       # read 1 h after programming, at 25 °C
    chip.move_to(Condition(time_s=365 * 86400, temperature_c=80))      # the same chip a year later, hot

The same chip instance keeps its programming errors, its per-device drift exponents and its periphery draws; only
what the moment changes moves: drift and the accumulated read noise (time), the temperature shift, leakage and the
ADC offsets' drift from their trim (temperature). Parsed from text as `1h@25C`, `1y@80C`, `30d`, `55C`.
"""

from __future__ import annotations

from typing import ClassVar

import re

from pydantic import BaseModel, ConfigDict, Field

from romer.errors import RomerError
from romer.validation import OneLineErrors

MAX_TIME_S = 100 * 365 * 86400  # the drift and retention laws are extrapolated far past any measurement beyond this
UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400, "y": 365 * 86400}
TEXT = re.compile(r"^\s*(?:(?P<time>[0-9.]+(?:e[+-]?\d+)?)\s*(?P<unit>min|mo|s|h|d|w|y))?\s*@?\s*"
                  r"(?:(?P<temperature>-?[0-9.]+)\s*C)?\s*$", re.IGNORECASE)


class Condition(OneLineErrors):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _noun: ClassVar[str] = "condition field"
    _where_listed: ClassVar[str] = "a condition has time_s and temperature_c"

    time_s: float | None = Field(None, ge=0, le=MAX_TIME_S, description="s since programming, at most 100 years "
                                                                          "(None: as the chip's configuration says)")
    temperature_c: float | None = Field(None, ge=-60, le=200, description="°C, operating temperature (None: as "
                                                                          "configured)")

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """`1h@25C`, `1y@80C`, `30d`, `55C` (units s, min, h, d, w, mo = 30 d, y = 365 d)."""
        match = TEXT.match(text)
        if not match or not (match["time"] or match["temperature"]):
            raise RomerError(f"cannot read the condition {text!r}; write TIME[@TEMPERATURE], e.g. 1h@25C, 1y@80C, 30d")
        time = float(match["time"]) * UNITS[match["unit"].lower()] if match["time"] else None
        temperature = float(match["temperature"]) if match["temperature"] else None
        return cls(time_s=time, temperature_c=temperature)

    def applied_to(self, config):
        """`config` (a NoiseConfig) read at this moment."""
        update = {k: v for k, v in (("drift_time_s", self.time_s), ("temperature_c", self.temperature_c))
                  if v is not None}
        from romer.noise.config import validated

        return validated(config.model_dump() | update) if update else config
