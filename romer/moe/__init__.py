"""Mixture-of-experts structure: per-family adapters, routing telemetry, load and fidelity metrics."""

from romer.moe.adapter import (MoeAdapter, MoeLayer, RouterOutput, adapter_for, register_adapter, require_moe,
                               structure_of, supported_model_types, unregister_adapter)
from romer.moe.detect import MoeBlock, find_moe_blocks
from romer.moe.metrics import LoadMetrics, load_metrics
from romer.moe.telemetry import RoutingRecorder, routing_fidelity

__all__ = ["LoadMetrics", "MoeAdapter", "MoeBlock", "MoeLayer", "RouterOutput", "RoutingRecorder", "adapter_for",
           "find_moe_blocks", "load_metrics", "register_adapter", "require_moe", "routing_fidelity", "structure_of",
           "supported_model_types", "unregister_adapter"]

import romer.moe.families  # noqa: E402,F401  (the built-in families register at import, after the registry exists)
