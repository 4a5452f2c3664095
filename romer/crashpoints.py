"""Named crash points: crash recovery tested at chosen places, deterministically, not by timing (as SQLite's crash
tests and FoundationDB's simulation do).

A test sets `ROMER_CRASH=<point>:<n>:<how>` before the process starts; at the n-th pass (counting from 1) of the
named point the process kills itself with SIGKILL (`how` = kill) or raises KeyboardInterrupt (`how` = interrupt,
what Ctrl-C does). Several crashes may be listed, comma-separated. Unset, `crash_point` is a function that returns
at once and `armed` is always False: production runs pay one call per point.

The points (`POINTS`) sit in the campaign writer and runner; `tests/test_kill_resume.py` drives every one.
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "ROMER_CRASH"
POINTS = {
    "lock-taken": "the results folder's lock is held, nothing written yet",
    "line-half-written": "half of a unit's results.jsonl line is on disk",
    "line-before-fsync": "a unit's line is written, not yet fsynced",
    "line-kept": "a unit's line is fsynced; the run has not yet counted it",
    "mid-calibration": "a calibration step has run; the calibration is not finished",
    "calibrated": "a unit is calibrated, not yet evaluated",
    "file-before-rename": "an output file is written to its temporary name, not yet renamed into place",
    "report": "every unit is kept; the report is being written",
}


def _plan(text: str | None) -> dict[str, tuple[int, str]]:
    plan = {}
    for item in filter(None, (text or "").split(",")):
        try:
            point, n, how = item.split(":")
            n = int(n)
        except ValueError:
            raise ValueError(f"{ENVIRONMENT}={text!r}: write point:n:kill or point:n:interrupt") from None
        if point not in POINTS or how not in ("kill", "interrupt") or n < 1:
            raise ValueError(f"{ENVIRONMENT}: unknown crash {item!r}; points are {', '.join(POINTS)}")
        plan[point] = (n, how)
    return plan


_PLAN = _plan(os.environ.get(ENVIRONMENT))
_passes: dict[str, int] = {}


def _armed_crash_point(name: str) -> None:
    if name not in _PLAN:
        return
    _passes[name] = _passes.get(name, 0) + 1
    n, how = _PLAN[name]
    if _passes[name] != n:
        return
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt(f"crash point {name}")


def _no_crash_point(name: str) -> None:
    return None


crash_point = _armed_crash_point if _PLAN else _no_crash_point


def armed(name: str) -> bool:
    """Whether a crash is planned at `name` in this process (a point that needs a write split in two)."""
    return name in _PLAN
