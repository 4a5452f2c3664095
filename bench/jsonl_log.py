"""The one results log the bench scripts share: one JSON record per line, appended as each unit finishes, so a rerun
reads what is done and measures the rest (`python bench/<script>.py` puts this folder on the import path)."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    """Every record in the log at `path` (none if it does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def results_log(folder: str) -> Path:
    """The log of the results folder `folder`, which is made if it is missing."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return out / "results.jsonl"
