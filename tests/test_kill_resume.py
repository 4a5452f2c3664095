"""Kill anywhere, deterministically: `romer run` crashed at every named crash point (romer/crashpoints.py), by
SIGKILL and by Ctrl-C, and resumed with the same command each time, ends with the results of an uninterrupted
run, unit for unit, with no unit twice; a torn line is redone; Ctrl-C exits 130 and says how to resume. No sleeps
and no timing: each crash happens at the n-th pass of a named point, whatever the machine's load. One writer per
folder: a second run refuses at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from romer.campaign import run_campaign, run_spec
from romer.campaign.lock import folder_lock
from romer.campaign.log import unit_key
from romer.crashpoints import ENVIRONMENT, POINTS
from romer.errors import RomerError

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("calib_seconds", "calib_seconds_mean", "clean_twin_seconds", "outliers_seconds", "seconds", "seconds_before_fit",
          "fit_seconds", "plan_seconds", "block_seconds")  # wall times: they differ from run to run
UNITS = 1 + 2 + 2 * 3  # clean, the clean-cost checks of rc and romer, and 2 chips × 3 methods

# (point, pass, how), in the order one folder meets them; each run resumes what the crashes before it left
CRASHES = [
    ("lock-taken", 1, "kill"),
    ("line-half-written", 1, "kill"),        # the clean unit torn on disk ...
    ("line-before-fsync", 2, "kill"),        # ... redone, then the next unit written, not fsynced
    ("mid-calibration", 1, "interrupt"),     # Ctrl-C inside romer's replacement step of the clean-cost check
    ("calibrated", 1, "kill"),               # that check calibrated, not yet measured
    ("line-kept", 3, "interrupt"),           # the third unit of this run kept, Ctrl-C before it is counted
    ("mid-calibration", 3, "kill"),          # a chip's rc done, romer's replacement done, its router step not
    ("line-half-written", 2, "interrupt"),   # Ctrl-C with half a line on disk
    ("calibrated", 1, "interrupt"),
    ("file-before-rename", 2, "kill"),       # run.json's new version not yet renamed into place (1: the holder's)
    ("report", 1, "kill"),                   # every unit kept, the report half written
    ("report", 1, "interrupt"),
]


def config(model_dir, texts, folder: Path) -> Path:
    evaluation, calibration = texts
    fields = dict(model=str(model_dir), data=str(evaluation), calib_data=str(calibration),
                  noise=["gaussian:sigma_dev=0.1"], seeds=[0, 1], methods=["none", "rc", "romer"],
                  max_tokens=64 * 4, window=64, routing_tokens=64 * 2, calibration={"calib_tokens": 64 * 6})
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def romer_run(config_path: Path, out: Path, crash: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT} | {"HF_HUB_OFFLINE": "1"}
    if crash:
        env[ENVIRONMENT] = crash
    return subprocess.run([sys.executable, "-m", "romer.cli", "run", "--config", str(config_path), "--out", str(out),
                           "--threads", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING and k != "paths"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def records(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text() if (out / "results.jsonl").exists() else ""
    assert text == "" or text.endswith("\n"), "a resumed run left a torn line"
    return [json.loads(line) for line in text.splitlines()]


def test_every_crash_point_is_driven():
    assert {point for point, _, _ in CRASHES} == set(POINTS)
    assert {how for _, _, how in CRASHES} == {"kill", "interrupt"}


def test_crashed_at_every_named_point_and_resumed_equals_an_uninterrupted_run(tiny_moe_dir, texts, tmp_path):
    path = config(tiny_moe_dir, texts, tmp_path)
    run_campaign(run_spec(**yaml.safe_load(path.read_text())), tmp_path / "whole", progress=False)
    out = tmp_path / "crashed"
    for point, n, how in CRASHES:
        result = romer_run(path, out, f"{point}:{n}:{how}")
        if how == "kill":
            assert result.returncode == -9, (point, n, result.returncode, result.stderr[-2000:])
        else:
            assert result.returncode == 130, (point, n, result.returncode, result.stderr[-2000:])
            assert "run the same command again to resume" in result.stderr and "Traceback" not in result.stderr
        results = out / "results.jsonl"
        if point == "line-half-written" and how == "kill":
            torn = results.read_text()
            assert torn and not torn.endswith("\n")  # half a line on disk
        kept = [unit_key(r) for r in records(out)] if results.exists() and results.read_text().endswith("\n") else []
        assert len(kept) == len(set(kept)), (point, n)
    final = romer_run(path, out)
    assert final.returncode == 0, final.stderr[-2000:]
    resumed, whole = records(out), records(tmp_path / "whole")
    keys = [unit_key(r) for r in resumed]
    assert len(keys) == len(set(keys)) == UNITS  # every unit once
    assert sorted(map(json.dumps, map(without_timing, resumed))) == \
        sorted(map(json.dumps, map(without_timing, whole)))  # unit for unit, bit for bit (timing aside)
    assert without_timing(json.loads((out / "results.json").read_text())) == \
        without_timing(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name not in (".romer.lock",)]


def test_a_bad_crash_plan_is_refused():
    result = subprocess.run([sys.executable, "-c", "import romer.crashpoints"], capture_output=True, text=True,
                            env=os.environ | {ENVIRONMENT: "nowhere:1:kill"}, cwd=ROOT, timeout=600)
    assert result.returncode != 0 and "unknown crash 'nowhere:1:kill'" in result.stderr


def test_one_writer_per_folder_and_a_killed_holder_frees_it(tiny_moe_dir, texts, tmp_path):
    out = tmp_path / "out"
    with folder_lock(out):
        spec = run_spec(**yaml.safe_load(config(tiny_moe_dir, texts, tmp_path).read_text()))
        with pytest.raises(RomerError, match=f"{out} is in use by pid {os.getpid()}"):
            run_campaign(spec, out, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", "import time, sys; from romer.campaign.lock import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RomerError, match=f"in use by pid {holder.pid}"):
        with folder_lock(out):
            pass
    holder.kill()
    holder.wait()
    with folder_lock(out):  # the OS released the dead holder's lock: taken over at once
        pass
    file = tmp_path / "a-file"
    file.write_text("mine")
    with pytest.raises(RomerError, match="is a file, not a folder"):
        with folder_lock(file):
            pass
    assert file.read_text() == "mine"
