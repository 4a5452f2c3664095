"""`refresh_`: a calibrated chip that has aged, brought back with a few steps from the values it carries.

    chip.move_to(Condition(time_s=YEAR, temperature_c=80))     # the chip in the field, a year on and hot
    record = refresh_(model, calibration, calib_ids, steps=20)   # its fitted numbers refitted, nothing added
    calibration.rollback(record["mark"])                         # the refresh undone (or calibration.remove())

A fit (`retune`, `outlier-retune`, `ahwa-lora-retune`, …) leaves digital numbers on the chip: corrections after the
ADCs, re-set norm gains, router biases (`Calibration.fitted_parameters`). A refresh takes `steps` steps of retune's
end-to-end fit (its loss, learning rate and held-out choice of the best step, which is never worse than the values
it starts from) on the chip as it is now, against the clean twin on the same calibration text. It adds nothing, so
the digital share is unchanged; what it costs is the clean twin's visit and the steps, both recorded. A calibration
without fitted numbers (ROMER's statistics, a data-free placement) has nothing to refresh: refitting it is
recalibrating it.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from romer.calibration.context import CalibrationContext
from romer.calibration.methods.retune import fit_end_to_end
from romer.calibration.state import Calibration
from romer.calibration.tokens import CalibrationTokens
from romer.calibration.trainable import training_only
from romer.errors import RomerError
from romer.evaluation.perplexity import default_window


def refreshable(calibration: Calibration) -> bool:
    return bool(calibration.fitted_parameters())


def refresh_(model: nn.Module, calibration: Calibration, calib_ids: torch.Tensor, steps: int = 20) -> dict:
    """Refit `calibration`'s fitted digital numbers in place for `steps` steps on the chip as it reads now; returns
    the record (seconds of the clean twin's visit and of the fit, the held-out KL before and after, and the `mark`
    that `calibration.rollback` takes to undo it)."""
    chip = calibration.chip
    if chip is None or chip.restored:
        raise RomerError("refresh_ needs the calibration's chip, live; program the model with apply_noise_ first")
    params = calibration.fitted_parameters()
    if not params:
        raise RomerError(f"a '{calibration.config.method}' calibration has no fitted digital numbers to refresh; "
                         "calibrate it again instead")
    if steps < 1:
        raise RomerError(f"a refresh takes at least one step, got {steps}")
    config = calibration.config
    started = time.perf_counter()
    window = config.window or default_window(model)
    tokens = CalibrationTokens.split(calib_ids, window, config.calib_tokens, config.holdout or 0.25)
    tokens.require_holdout("a refresh")
    context = CalibrationContext(model, config, tokens, calibration, chip, needs=frozenset({"teacher", "hidden"}))
    teacher = context.teacher("hidden")
    teacher_seconds = time.perf_counter() - started
    mark = calibration.mark()
    calibration.keep_values(params)
    fit_started = time.perf_counter()
    with training_only(model, params):
        fit = fit_end_to_end(model, params, steps, tokens.fit, teacher.fit, tokens.holdout, teacher.holdout,
                             config.model_copy(update={"retune_eval_every": min(config.retune_eval_every, steps)}))
    return {"mark": mark, "steps": steps, "parameters": sum(p.numel() for p in params),
            "teacher_seconds": teacher_seconds, "fit_seconds": time.perf_counter() - fit_started,
            "seconds": time.perf_counter() - started, **fit}
