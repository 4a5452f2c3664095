"""Mixture-of-experts structure: finding MoE blocks, recording routing, load metrics."""

from romer.moe.detect import MoeBlock, find_moe_blocks, require_moe
from romer.moe.metrics import LoadMetrics, load_metrics
from romer.moe.telemetry import RoutingRecorder

__all__ = ["LoadMetrics", "MoeBlock", "RoutingRecorder", "find_moe_blocks", "load_metrics", "require_moe"]
