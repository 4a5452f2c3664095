"""romer: MoE LLMs on noisy analog compute-in-memory hardware, and how to calibrate them."""

from romer.huge_pages import ask_for_huge_pages

ask_for_huge_pages()  # before anything below imports torch: its allocator reads the setting once

from romer.calibration import CalibrationConfig, RomerConfig, calibrate_, load_calibration, refresh_  # noqa: E402
from romer.data import load_corpus  # noqa: E402
from romer.errors import RomerError  # noqa: E402
from romer.evaluation import expert_load, perplexity, tokenize_stream  # noqa: E402
from romer.models import load_model  # noqa: E402
from romer.noise import Condition, NoiseConfig, apply_noise_  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CalibrationConfig", "Condition", "NoiseConfig", "RomerConfig", "RomerError", "apply_noise_", "calibrate_", "expert_load", "load_calibration", "load_corpus", "load_model", "perplexity", "refresh_", "tokenize_stream"]
