"""Evaluation: perplexity over sliding windows, routing and expert load on a token stream."""

from romer.evaluation.perplexity import PerplexityResult, default_window, perplexity, sliding_windows, tokenize_stream
from romer.evaluation.routing import capture_routing, expert_load, profile_routing

__all__ = ["PerplexityResult", "capture_routing", "default_window", "expert_load", "perplexity", "profile_routing",
           "sliding_windows", "tokenize_stream"]
