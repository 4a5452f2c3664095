"""romer: MoE LLMs on noisy analog compute-in-memory hardware, and how to calibrate them."""

from romer.calibration import CalibrationConfig, RomerConfig, calibrate_, load_calibration, refresh_
from romer.data import load_corpus
from romer.errors import RomerError
from romer.evaluation import expert_load, perplexity, tokenize_stream
from romer.models import load_model
from romer.noise import Condition, NoiseConfig, apply_noise_

__version__ = "0.1.0"
__all__ = ["CalibrationConfig", "Condition", "NoiseConfig", "RomerConfig", "RomerError", "apply_noise_", "calibrate_", "expert_load", "load_calibration", "load_corpus", "load_model", "perplexity", "refresh_", "tokenize_stream"]
