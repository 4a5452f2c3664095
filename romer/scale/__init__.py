"""Scale: campaigns on a Ray cluster, and the memory a run needs before it starts."""

from romer.scale.memory import MemoryEstimate, estimate_memory

__all__ = ["MemoryEstimate", "estimate_memory"]
