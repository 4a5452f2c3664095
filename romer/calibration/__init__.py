"""Training-free calibration of MoE models on noisy chips: ROMER and our additions.

    romer.calibrate_(model, romer.RomerConfig(method="romer"), calib_ids)
"""

from romer.calibration.config import RomerConfig, romer_config
from romer.calibration.methods import Method, get_method, method_names, register_method
from romer.calibration.romer import calibrate_
from romer.calibration.state import Calibration

__all__ = ["Calibration", "Method", "RomerConfig", "calibrate_", "get_method", "method_names", "register_method",
           "romer_config"]
