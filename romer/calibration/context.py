"""One calibration of one chip: its tokens, its current settings, and what it knows of the clean twin.

The clean twin (the model in software, `ChipHandle.suspended`) is visited once per calibration, before
any step changes the model, and everything the method's steps will ask of it is computed in that visit:
the clean routing on the fit tokens ("routing") and retune's teacher on the fit and held-out tokens
("teacher"). Without a chip (the clean-cost check) the model itself is the clean twin.
"""

from __future__ import annotations

import time

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from romer.calibration.state import Calibration
from romer.calibration.statistics import RoutingStats, routing_stats
from romer.calibration.teacher import Teacher, clean_teacher
from romer.calibration.tokens import CalibrationTokens
from romer.noise.chip import ChipHandle
from romer.resident import trim_heap


@dataclass
class CalibrationContext:
    model: nn.Module
    config: object                       # CalibrationConfig, the settings in force now (the tuner changes them)
    tokens: CalibrationTokens
    calibration: Calibration
    chip: ChipHandle | None
    needs: frozenset[str] = frozenset()  # what the steps will ask of the clean twin
    explicit: frozenset[str] = frozenset()  # the fields the user set: kept as set (a tuner never changes them)
    _routing: RoutingStats | None = field(default=None, repr=False)
    _teacher: Teacher | None = field(default=None, repr=False)
    _teacher_extras: frozenset[str] = field(default=frozenset(), repr=False)
    clean_twin_seconds: float = 0.0      # time spent on the clean twin (its routing, the teacher), for the record

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @torch.no_grad()
    def visit_clean_twin(self) -> None:
        """Compute, in one visit, everything `needs` names; a later request for something not planned visits again.
        "hidden" and "layers" ask the teacher for the decoder layers' outputs as well (end-to-end and block-wise
        targets); a teacher computed without what is now asked for is computed again."""
        extras = frozenset(self.needs & {"hidden", "layers"})
        teacher_ok = self._teacher is not None and extras <= self._teacher_extras
        wanted = {need for need in self.needs - {"hidden", "layers"}
                  if not {"routing": self._routing is not None, "teacher": teacher_ok}[need]}
        if not wanted:
            return
        started = time.perf_counter()
        with self.chip.suspended() if self.chip is not None else nullcontext():
            if "routing" in wanted:
                self._routing = routing_stats(self.model, self.tokens.fit, self.batch_size, logits=True)
            if "teacher" in wanted:
                self._teacher = clean_teacher(self.model, self.tokens, self.batch_size,
                                              hidden="hidden" in extras and self.config.retune_hidden_weight > 0,
                                              layers="layers" in extras)
                self._teacher_extras = extras
        self.clean_twin_seconds += time.perf_counter() - started
        trim_heap()

    def clean_routing(self) -> RoutingStats:
        """The clean twin's routing on the fit tokens: selection counts and router logits."""
        if self._routing is None:
            self.needs = self.needs | {"routing"}
            self.visit_clean_twin()
        return self._routing

    def teacher(self, *extras: str) -> Teacher:
        """The clean twin's next-token log-probabilities on the fit and held-out tokens, and with `extras` ("hidden":
        its hidden states on the fit tokens; "layers": every decoder layer's output on the fit and held-out tokens)."""
        if self._teacher is None or not set(extras) <= self._teacher_extras:
            self.needs = self.needs | {"teacher", *extras}
            self.visit_clean_twin()
        return self._teacher
