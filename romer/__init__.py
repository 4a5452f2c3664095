"""romer: MoE LLMs on noisy analog compute-in-memory hardware, and how to calibrate them."""

from romer.data import load_corpus
from romer.errors import RomerError
from romer.evaluation import expert_load, perplexity, tokenize_stream
from romer.models import load_model

__version__ = "0.1.0"
__all__ = ["RomerError", "expert_load", "load_corpus", "load_model", "perplexity", "tokenize_stream"]
