"""Diagnosis before calibration: where a chip's damage sits and what router calibration can reach."""

from romer.diagnosis.diagnose import diagnose

__all__ = ["diagnose"]
