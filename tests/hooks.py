"""Test-only hooks, installed in a subprocess before romer's CLI runs (production code carries none)."""

from __future__ import annotations

import json
import time

from romer.campaign.log import ResultsLog, unit_key


def pause_mid_write(seconds: float) -> None:
    """Every new line of results.jsonl is written half, flushed, and finished only after `seconds`: a test can
    kill the process with a torn line on disk."""

    def append(self: ResultsLog, record: dict) -> bool:
        if unit_key(record) in self.records:
            return False
        line = json.dumps(record) + "\n"
        with open(self.path, "a") as handle:
            handle.write(line[: len(line) // 2])
            handle.flush()
            time.sleep(seconds)
            handle.write(line[len(line) // 2:])
        self.records[unit_key(record)] = record
        return True

    ResultsLog.append = append
