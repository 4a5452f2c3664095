"""The supported MoE families; importing this package registers their adapters."""

from romer.moe.families import deepseek_moe, deepseek_v2, deepseek_v3, softmax_topk  # noqa: F401
