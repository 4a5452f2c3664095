"""Campaigns: run and sweep over chip seeds and methods, resumable, with reports."""

from romer.campaign.run import run_campaign
from romer.campaign.spec import RunSpec, load_run_file, run_spec

__all__ = ["RunSpec", "load_run_file", "run_campaign", "run_spec"]
