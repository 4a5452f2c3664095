"""Training-free calibration of MoE models on noisy chips: ROMER and our additions, as registered steps.

    romer.calibrate_(model, romer.CalibrationConfig(method="romer"), calib_ids, chip=chip)

`registry.py` holds the steps and methods (a leaf); `methods/` holds the built-in ones, one file each.
"""

from romer.calibration import methods as _built_in  # noqa: F401  (registers the built-in methods)
from romer.calibration.config import CalibrationConfig, RomerConfig, calibration_config, romer_config
from romer.calibration.persist import load_calibration
from romer.calibration.pipeline import calibrate_, carried_calibration, resolve
from romer.calibration.refresh import refresh_, refresh_teacher, refreshable
from romer.calibration.registry import Method, get_method, method_names, register_method, register_step
from romer.calibration.state import Calibration
from romer.calibration.step import Step

__all__ = ["Calibration", "CalibrationConfig", "Method", "RomerConfig", "Step", "calibrate_", "calibration_config",
           "carried_calibration", "get_method", "load_calibration", "method_names", "refresh_", "refresh_teacher", "refreshable", "register_method",
           "register_step", "resolve", "romer_config"]
