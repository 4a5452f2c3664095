"""`calibrate_`: run a method's steps on a model that sits on a simulated chip, in place.

    chip = romer.apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    calibration = romer.calibrate_(model, CalibrationConfig(method="romer"), calib_ids, chip=chip)
    ...                                   # evaluate the calibrated noisy model
    calibration.remove()                  # back to the plain noisy model, bit for bit

The method (methods.py) names its steps (step.py); a field the user set that none of them reads is
refused; the clean twin is visited once (context.py); every step's change is undone by `remove()`, and
restoring the chip removes the calibration first (`ChipHandle.restore`).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch
from torch import nn

from romer.calibration.config import CalibrationConfig, calibration_config
from romer.calibration.context import CalibrationContext
from romer.calibration.registry import get_method, refuse_unused
from romer.calibration.state import Calibration
from romer.calibration.tokens import CalibrationTokens
from romer.crashpoints import crash_point
from romer.errors import RomerError
from romer.evaluation.perplexity import default_window
from romer.noise import chip_of
from romer.noise.chip import ChipHandle
from romer.resident import trim_heap

_ACTIVE: WeakKeyDictionary = WeakKeyDictionary()  # model → the calibration it carries now


def calibrate_(model: nn.Module, config: CalibrationConfig, calib_ids: torch.Tensor,
               chip: ChipHandle | None = None) -> Calibration:
    """Calibrate `model` in place from unlabeled calibration tokens; returns the handle that undoes it.
    `chip` defaults to the chip the model sits on; without one, the clean model is calibrated (the
    clean-cost check), with its own routing as the "noisy" statistics."""
    if not isinstance(config, CalibrationConfig):
        raise RomerError("calibrate_ needs a CalibrationConfig; build one with romer.CalibrationConfig(method=...)")
    current = carried_calibration(model)
    if current is not None:
        raise RomerError("this model is already calibrated; remove() the previous calibration first")
    if chip is not None and chip.restored:
        raise RomerError("the chip passed to calibrate_ was restored (its handle is spent); program the model again "
                         "with apply_noise_ and pass that chip, or pass no chip to calibrate the clean model")
    chip = chip if chip is not None else chip_of(model)
    explicit = frozenset(config.explicit())
    config, brought = resolve(config)
    method = get_method(config.method)
    steps = method.step_objects()
    window = config.window or default_window(model)
    needs_holdout = any(s.needs_holdout(config, chip) for s in steps)
    holdout = config.holdout if needs_holdout or "holdout" in explicit else 0.0  # an explicit share is kept
    tokens = CalibrationTokens.split(calib_ids, window, config.calib_tokens, holdout)
    calibration = Calibration(model, config, chip)
    context = CalibrationContext(model, config, tokens, calibration, chip,
                                 needs=frozenset().union(*(s.clean_needs(config, chip) for s in steps
                                                           if s.enabled(config, chip))), explicit=explicit)
    try:
        context.visit_clean_twin()  # before any step changes the model
        run_steps(context, method)
    except BaseException:
        calibration.remove()
        raise
    calibration.config = context.config
    calibration.report["tokens"] = {"fit": tokens.fit.numel(), "holdout": tokens.holdout.numel(), "window": window}
    calibration.report["clean_twin_seconds"] = context.clean_twin_seconds
    if brought:
        calibration.report["method_defaults"] = brought
    carry(model, calibration)
    return calibration


def resolve(config: CalibrationConfig) -> tuple[CalibrationConfig, dict]:
    """(`config` with the method's defaults for the fields the user left unset, those defaults). A field the user set
    that none of the method's steps reads under the resolved settings is refused in one line; `romer run` checks
    every method of a campaign this way before any model loads."""
    method = get_method(config.method)
    brought = {k: v for k, v in method.defaults.items() if k not in config.explicit() and k != "method"}
    resolved = calibration_config(**(config.model_dump() | brought))
    refuse_unused(config.explicit(), resolved)
    return resolved, brought


def run_steps(context: CalibrationContext, method) -> None:
    """The method's steps in the order the settings ask, each if it is enabled under the settings in force when
    its turn comes (a tuner before it may have changed them)."""
    for step in method.ordered_steps(context.config):
        if step.enabled(context.config, context.chip):
            step.apply(context)
            trim_heap()  # a step's passes over the model leave the heap fragmented
            crash_point("mid-calibration")


def carried_calibration(model: nn.Module) -> Calibration | None:
    """The calibration `model` carries now (made by `calibrate_`, or installed by `load_calibration`), or None."""
    calibration = _ACTIVE.get(model)
    return calibration if calibration is not None and not calibration.removed else None


def carry(model: nn.Module, calibration: Calibration) -> None:
    """Record that `model` carries `calibration` (made here, or loaded), until it is removed."""
    _ACTIVE[model] = calibration
    calibration.on_remove(lambda: _ACTIVE.pop(model, None) if _ACTIVE.get(model) is calibration else None)
