"""Training-free calibration of MoE models on noisy chips: ROMER and our additions, as registered steps.

    romer.calibrate_(model, romer.CalibrationConfig(method="romer"), calib_ids, chip=chip)
"""

from romer.calibration.config import CalibrationConfig, RomerConfig, calibration_config, romer_config
from romer.calibration.methods import Method, get_method, method_names, register_method
from romer.calibration.persist import load_calibration
from romer.calibration.pipeline import calibrate_, carried_calibration
from romer.calibration.state import Calibration
from romer.calibration.step import Step, register_step

__all__ = ["Calibration", "CalibrationConfig", "Method", "RomerConfig", "Step", "calibrate_", "calibration_config",
           "carried_calibration", "get_method", "load_calibration", "method_names", "register_method",
           "register_step", "romer_config"]
