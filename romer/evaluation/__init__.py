"""Evaluation: perplexity over sliding windows, expert load on a token stream."""

from romer.evaluation.perplexity import PerplexityResult, default_window, perplexity, sliding_windows, tokenize_stream
from romer.evaluation.routing import expert_load

__all__ = ["PerplexityResult", "default_window", "expert_load", "perplexity", "sliding_windows", "tokenize_stream"]
