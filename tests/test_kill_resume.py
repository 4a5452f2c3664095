"""Kill anywhere: `romer run` killed again and again (SIGKILL and SIGINT, mid-write of a line and
mid-calibration among the points) and resumed each time ends with the results of an uninterrupted run,
with no unit twice; Ctrl-C says how to resume. One writer per folder: a second run refuses at once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from romer.campaign import run_campaign, run_spec
from romer.campaign.lock import folder_lock
from romer.campaign.log import unit_key
from romer.errors import RomerError

TIMING = ("calib_seconds", "calib_seconds_mean")


def config(model_dir, texts, folder: Path) -> Path:
    evaluation, calibration = texts
    fields = dict(model=str(model_dir), data=str(evaluation), calib_data=str(calibration),
                  noise=["gaussian:sigma_dev=0.1"], seeds=[0, 1, 2, 3, 4], methods=["none", "rc", "tuned"],
                  max_tokens=64 * 6, window=64, routing_tokens=64 * 4,
                  calibration={"calib_tokens": 64 * 8, "digital_budget": 0.05})
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING and k != "paths"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def start(config_path: Path, out: Path, pause_mid_write: float = 0) -> subprocess.Popen:
    """`romer run` in a subprocess; with `pause_mid_write`, each results line is written half, then after a pause
    (tests/hooks.py), so that a kill can land mid-write."""
    hook = f"import tests.hooks; tests.hooks.pause_mid_write({pause_mid_write}); " if pause_mid_write else ""
    return subprocess.Popen([sys.executable, "-c", f"{hook}from romer.cli import main; main()", "run", "--config",
                             str(config_path), "--out", str(out), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent, env=os.environ | {"HF_HUB_OFFLINE": "1"})


def lines(out: Path) -> list[str]:
    path = out / "results.jsonl"
    return path.read_text().split("\n") if path.exists() else []


def wait_for(condition, process: subprocess.Popen, limit: float = 120.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    raise AssertionError("the run neither reached the kill point nor finished")


def test_killed_anywhere_and_resumed_equals_an_uninterrupted_run(tiny_moe_dir, texts, tmp_path):
    path = config(tiny_moe_dir, texts, tmp_path)
    reference = run_campaign(run_spec(**yaml.safe_load(path.read_text())), tmp_path / "whole", progress=False)
    out = tmp_path / "killed"
    chance = random.Random(7)
    kills = []
    while True:
        point = len(kills)
        if point == 2:  # mid-write of a line: half of it on disk when the signal lands
            process = start(path, out, pause_mid_write=30)
            reached = wait_for(lambda: lines(out) and lines(out)[-1] != "", process)
        elif point == 4:  # mid-calibration: a chip's noisy and rc units are written, its `tuned` is being fitted
            # (rc lands ~20 ms after the noisy unit, too soon to catch by polling; fitting `tuned` takes ~0.3 s)
            process = start(path, out)
            before = len([x for x in lines(out) if x])
            reached = wait_for(lambda: len([x for x in lines(out) if x]) > before
                               and json.loads([x for x in lines(out) if x][-1]).get("method") == "rc", process)
        else:  # random points: as the k-th new unit lands (k = 0: while loading), plus a random moment
            process = start(path, out)
            before, k = len([x for x in lines(out) if x]), int(point % 3 == 0)
            reached = wait_for(lambda: len([x for x in lines(out) if x]) >= before + k and os.path.exists(out),
                               process)
            time.sleep(chance.uniform(0.0, 0.3))
            reached = reached and process.poll() is None
        if not reached:  # it finished before the kill point: done
            assert process.wait() == 0, process.communicate()[1]
            break
        how = signal.SIGINT if point % 3 == 1 else signal.SIGKILL
        process.send_signal(how)
        _, stderr = process.communicate(timeout=60)
        kills.append((point, how, process.returncode))
        if how == signal.SIGINT and process.returncode == 130:
            assert "run the same command again to resume" in stderr and "Traceback" not in stderr
        if len(kills) >= 14:
            break
    final = start(path, out)
    _, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr
    assert len(kills) >= 10, kills
    assert {how for _, how, _ in kills} == {signal.SIGINT, signal.SIGKILL}
    assert any(how == signal.SIGINT and code == 130 for _, how, code in kills)  # Ctrl-C caught, resume hint shown
    records = [json.loads(x) for x in lines(out) if x]
    keys = [unit_key(r) for r in records]
    assert len(keys) == len(set(keys)) == 1 + 2 + 5 * 3  # every unit once
    resumed = json.loads((out / "results.json").read_text())
    expected = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert without_timing(resumed) == without_timing(expected)
    assert reference["methods"]["tuned"]["ppl"] == resumed["methods"]["tuned"]["ppl"]


def test_one_writer_per_folder_and_a_killed_holder_frees_it(tiny_moe_dir, texts, tmp_path):
    out = tmp_path / "out"
    with folder_lock(out):
        spec = run_spec(**yaml.safe_load(config(tiny_moe_dir, texts, tmp_path).read_text()))
        with pytest.raises(RomerError, match=f"{out} is in use by pid {os.getpid()}"):
            run_campaign(spec, out, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", "import time, sys; from romer.campaign.lock import folder_lock\n"
                               f"with folder_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
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
