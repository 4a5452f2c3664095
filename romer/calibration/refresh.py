"""`refresh_`: a calibrated chip that has aged, brought back with a few steps from the values it carries.

    teacher = refresh_teacher(model, calibration, calib_ids, batch_size=4)  # at calibration, kept on the host
    chip.move_to(Condition(time_s=YEAR, temperature_c=80))     # the chip in the field, a year on and hot
    record = refresh_(model, calibration, calib_ids, steps=40, batch_size=4, teacher=teacher)  # nothing added
    calibration.rollback(record["mark"])                         # the refresh undone (or calibration.remove())

A fit (`retune`, `outlier-retune`, `ahwa-lora-retune`, …) leaves digital numbers on the chip: corrections after the
ADCs, re-set norm gains, router biases (`Calibration.fitted_parameters`). A refresh takes `steps` steps of retune's
end-to-end fit (its loss and learning rate) and keeps the refreshed values only if the held-out loss, checked before
and after, says they are better than the values it started from on the chip as it is now, against the clean twin on the same calibration text. It adds nothing, so
the digital share is unchanged. A chip in the field has no clean twin: its targets are computed once, at calibration,
and kept (`refresh_teacher`), so a refresh costs its steps and two held-out checks; without them it visits the clean
twin first, and records those seconds apart. A calibration
without fitted numbers (ROMER's statistics, a data-free placement) has nothing to refresh: refitting it is
recalibrating it.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from romer.calibration.methods.retune import fit_end_to_end
from romer.calibration.registry import get_method
from romer.calibration.state import Calibration
from romer.calibration.teacher import Teacher, clean_teacher
from romer.calibration.tokens import CalibrationTokens
from romer.calibration.trainable import training_only
from romer.errors import RomerError
from romer.evaluation.perplexity import default_window


def refreshable(calibration: Calibration) -> bool:
    """Whether the calibration fitted digital numbers against the clean twin's outputs (one of its method's steps
    reads the teacher): those a refresh fits again. A data-free calibration's numbers (`compensate`'s reads, a
    placement) are brought up to date by calibrating again, at the cost it had the first time."""
    if not calibration.fitted_parameters():
        return False
    config, chip = calibration.config, calibration.chip
    return any("teacher" in step.clean_needs(config, chip) for step in get_method(config.method).ordered_steps(config)
               if step.enabled(config, chip))


def refresh_teacher(model: nn.Module, calibration: Calibration, calib_ids: torch.Tensor,
                    batch_size: int | None = None) -> Teacher:
    """The clean twin's targets on the calibration text, in batches of `batch_size` sequences (default: the
    calibration's), as a refresh at that batch reads them. They do not depend on the chip or its condition: a
    deployment computes them once (at calibration) and keeps them on the host, so that each later refresh pays only
    its steps."""
    chip = calibration.chip
    if chip is None or chip.restored:
        raise RomerError("refresh_teacher needs the calibration's chip, live; program the model with apply_noise_ first")
    config = _config(calibration, batch_size)
    tokens = _tokens(model, config, calib_ids)
    with calibration.clean_twin():
        return clean_teacher(model, tokens, config.batch_size, hidden=config.retune_hidden_weight > 0)


def _config(calibration: Calibration, batch_size: int | None):
    if batch_size is not None and batch_size < 1:
        raise RomerError(f"a refresh's batch holds at least one sequence, got {batch_size}")
    return calibration.config.model_copy(update={"batch_size": batch_size or calibration.config.batch_size})


def _tokens(model: nn.Module, config, calib_ids: torch.Tensor) -> CalibrationTokens:
    window = config.window or default_window(model)
    tokens = CalibrationTokens.split(calib_ids, window, config.calib_tokens, config.holdout or 0.25)
    tokens.require_holdout("a refresh")
    return tokens


def refresh_(model: nn.Module, calibration: Calibration, calib_ids: torch.Tensor, steps: int = 20,
             lr: float | None = None, batch_size: int | None = None, teacher: Teacher | None = None) -> dict:
    """Refit `calibration`'s fitted digital numbers in place for `steps` steps of `batch_size` sequences (default:
    the calibration's batch) at learning rate `lr` (default: the fit's own `retune_lr`) on the chip as it reads now;
    returns the record (seconds of the clean twin's visit and of the fit, the held-out KL before and after, and the
    `mark` that `calibration.rollback` takes to undo it). With `teacher` (from `refresh_teacher` at the same batch,
    kept since calibration) the clean twin is not visited again."""
    chip = calibration.chip
    if chip is None or chip.restored:
        raise RomerError("refresh_ needs the calibration's chip, live; program the model with apply_noise_ first")
    params = calibration.fitted_parameters()
    if not refreshable(calibration):
        raise RomerError(f"a '{calibration.config.method}' calibration has no digital numbers fitted against the clean "
                         "twin to refresh; calibrate it again instead")
    if steps < 1:
        raise RomerError(f"a refresh takes at least one step, got {steps}")
    if lr is not None and not 0 < lr <= 1:
        raise RomerError(f"a refresh's learning rate must lie in (0, 1], got {lr}")
    config = _config(calibration, batch_size)
    kept = teacher is not None
    if kept and len(teacher.fit[0]) != min(config.batch_size, sum(len(t) for t in teacher.fit)):
        raise RomerError(f"the kept teacher was computed in batches of {len(teacher.fit[0])} sequences, the refresh "
                         f"runs batches of {config.batch_size}; pass the same batch_size to refresh_teacher")
    started = time.perf_counter()
    tokens = _tokens(model, config, calib_ids)
    teacher = teacher if kept else refresh_teacher(model, calibration, calib_ids, config.batch_size)
    teacher_seconds = 0.0 if kept else time.perf_counter() - started
    mark = calibration.mark()
    calibration.keep_values(params)
    fit_started = time.perf_counter()
    with training_only(model, params):
        fit = fit_end_to_end(model, params, steps, tokens.fit, teacher.fit, tokens.holdout, teacher.holdout,
                             config.model_copy(update={"retune_eval_every": steps,
                                                    "retune_lr": lr or config.retune_lr}))
    return {"mark": mark, "steps": steps, "lr": lr or config.retune_lr, "batch_size": config.batch_size,
            "teacher_kept": kept,
            "parameters": sum(p.numel() for p in params),
            "teacher_seconds": teacher_seconds, "fit_seconds": time.perf_counter() - fit_started,
            "seconds": time.perf_counter() - started, **fit}
