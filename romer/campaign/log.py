"""`results.jsonl`: one line per finished unit of work, appended and flushed to disk as it finishes.

A rerun reads the lines back and skips what is done, so an interrupted campaign loses nothing it
finished. A unit is kept once, however often a back end reports it. A torn last line (the process
died mid-write) is ignored and redone. `run.json` holds the spec, its fingerprint and the inputs'
description; a folder of another experiment is refused unless forced.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from romer.atomic import write_text_atomic
from romer.calibration.registry import ALIASES
from romer.crashpoints import armed, crash_point
from romer.errors import RomerError


OUTPUTS = ("results.jsonl", "run.json", "results.json", "report.md", "perplexity.png", "expert_load.png",
           "topk_agreement.png", "sweep.png", "regime_map.png", "aging.png", "cost_pareto.png")


def unit_key(record: dict) -> tuple:
    return (record["kind"], record.get("noise"), record.get("strength"), record.get("seed"), record.get("method"),
            record.get("condition"))


class CampaignSpec(Protocol):
    """What a results log needs of a campaign's spec (`RunSpec`, `AgeSpec`)."""

    def fingerprint(self) -> str: ...

    def fingerprints(self) -> set[str]: ...

    def model_dump(self, **kwargs) -> dict: ...


class ResultsLog:
    def __init__(self, folder: str | Path, spec: CampaignSpec, force: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"
        meta = self.folder / "run.json"
        previous: dict = {}
        if meta.exists():
            try:
                previous = json.loads(meta.read_text())
            except (ValueError, OSError):
                if not force:
                    raise RomerError(f"{meta} is not valid JSON (an interrupted copy?); pass --force to start "
                                     "this folder afresh, or choose another --out") from None
                previous = {}
            if not isinstance(previous, dict):
                previous = {}
            if previous.get("fingerprint") not in spec.fingerprints():
                if not force:
                    raise RomerError(f"{self.folder} holds results of a different configuration; choose another "
                                     "--out, or pass --force to discard them")
                self.discard()
        elif self.path.exists():
            if not force:
                raise RomerError(f"{self.folder} holds results.jsonl without run.json; choose another --out or --force")
            self.discard()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._drop_unfinished_writes()
        self.spec = spec
        self.inputs: dict | None = previous.get("inputs") if meta.exists() else None
        self._write_meta()
        self.records: dict[tuple, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line: that unit is redone
                if record.get("method") in ALIASES:  # recorded under a method's former name
                    record["method"] = ALIASES[record["method"]]
                self.records[unit_key(record)] = record
            self._rewrite()  # drop a torn line so appends start on a clean line

    def _drop_unfinished_writes(self) -> None:
        """The temporary files of an atomic write that a killed run never renamed into place (the folder's lock
        is ours: no other writer is using them)."""
        for name in OUTPUTS:
            for stale in self.folder.glob(f".{name}.*"):
                stale.unlink(missing_ok=True)

    def _write_meta(self) -> None:
        meta = {"fingerprint": self.spec.fingerprint(), "spec": self.spec.model_dump(mode="json")}
        if self.inputs is not None:
            meta["inputs"] = self.inputs
        write_text_atomic(self.folder / "run.json", json.dumps(meta, indent=1) + "\n")

    def keep_inputs(self, inputs: dict) -> None:
        """The work bench's description (dataset, window, ...), so a finished campaign reports without a model."""
        self.inputs = inputs
        self._write_meta()

    def discard(self) -> None:
        """Remove the results romer wrote here (only those: the folder may hold the user's files)."""
        for name in OUTPUTS:
            (self.folder / name).unlink(missing_ok=True)

    def _rewrite(self) -> None:
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records.values()))

    def done(self, **key) -> dict | None:
        return self.records.get(unit_key(key))

    def append(self, record: dict) -> bool:
        """Keep a finished unit; a unit already kept is never counted twice (False)."""
        if unit_key(record) in self.records:
            return False
        line = json.dumps(record) + "\n"
        with open(self.path, "a") as handle:
            if armed("line-half-written"):  # a test's crash with half the line on disk
                handle.write(line[: len(line) // 2])
                handle.flush()
                crash_point("line-half-written")
                line = line[len(line) // 2:]
            handle.write(line)
            handle.flush()
            crash_point("line-before-fsync")
            os.fsync(handle.fileno())
        crash_point("line-kept")
        self.records[unit_key(record)] = record
        return True
