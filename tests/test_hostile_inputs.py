"""Every command and option, tried as a hostile user would: each case ends in one line on stderr naming the
problem and the fix, exit status 2, no traceback, and nothing of the user's modified."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from romer.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_moe_dir, tokenizer_dir):
    """A folder of hostile things, built once: broken models, files, configs and measurements."""
    root = tmp_path_factory.mktemp("hostile")

    def model_copy(name: str) -> Path:
        return Path(shutil.copytree(tiny_moe_dir, root / name))

    truncated = model_copy("truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    garbage = model_copy("garbage-weights")
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    no_tokenizer = model_copy("no-tokenizer")
    for file in no_tokenizer.iterdir():
        if file.name.startswith(("tokenizer", "special_tokens")):
            file.unlink()
    bad_config = model_copy("bad-config")
    (bad_config / "config.json").write_text("{not json")
    empty_config = model_copy("empty-config")
    (empty_config / "config.json").write_text("")
    bad_tokenizer = model_copy("bad-tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text("{\"truncated\": ")
    text = root / "text.txt"
    text.write_text("\n\n".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(300)))
    (root / "empty.txt").write_text("")
    (root / "short.txt").write_text("def f(): pass\n")
    (root / "a-file").write_text("mine")
    (root / "not-yaml.yaml").write_text("seeds: [0, 1\n")
    (root / "a-list.yaml").write_text("- 1\n- 2\n")
    (root / "noise-list.yaml").write_text("- sigma_dev\n")
    (root / "empty.csv").write_text("")
    (root / "wrong-columns.csv").write_text("a,b\n1,2\n")
    (root / "not-numbers.csv").write_text("target_us,measured_us\nten,eleven\n" * 3)
    (root / "few-rows.csv").write_text("target_us,measured_us\n1.0,1.1\n")
    corrupt_run = root / "corrupt-run"
    corrupt_run.mkdir()
    (corrupt_run / "run.json").write_text("{broken")
    (corrupt_run / "results.jsonl").write_text("{}\n")
    folder = root / "a-folder"
    folder.mkdir()
    return root


def fingerprint(root: Path) -> dict:
    """Every file under root with its content hash: what 'nothing modified' compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


M, D = "{root}/truncated", "{root}/text.txt"
TINY = "{tiny}"
CASES = [
    # files: weights, tokenizer, config
    (["eval", "--model", "{root}/truncated", "--data", D], "weights of {root}/truncated cannot be read"),
    (["eval", "--model", "{root}/garbage-weights", "--data", D], "weights of {root}/garbage-weights cannot be read"),
    (["eval", "--model", "{root}/no-tokenizer", "--data", D], "has no tokenizer"),
    (["eval", "--model", "{root}/bad-tokenizer", "--data", D], "tokenizer of {root}/bad-tokenizer cannot be read"),
    (["eval", "--model", "{root}/bad-config", "--data", D], "config.json is not valid JSON"),
    (["eval", "--model", "{root}/empty-config", "--data", D], "config.json is not valid JSON"),
    (["eval", "--model", "{root}/a-file", "--data", D], "is a file, not a model folder"),
    (["eval", "--model", "{root}/a-folder", "--data", D], "no config.json"),
    # files: data
    (["eval", "--model", TINY, "--data", "{root}/empty.txt"], "holds no text"),
    (["eval", "--model", TINY, "--data", "{root}/missing.txt"], "does not exist"),
    (["eval", "--model", TINY, "--data", "{root}/a-folder"], "is a folder"),
    (["eval", "--model", TINY, "--data", "{root}/short.txt", "--window", "64"], "fewer than one window of 64"),
    (["run", "--model", TINY, "--data", D, "--calib-data", "{root}/short.txt", "--window", "64",
      "--out", "{root}/out-short"], "fewer than one sequence of 64"),
    # files: configs, noise files, measurements, results folders
    (["run", "--config", "{root}/missing.yaml"], "cannot read config"),
    (["run", "--config", "{root}/not-yaml.yaml"], "is not valid YAML"),
    (["run", "--config", "{root}/a-list.yaml"], "must be a mapping"),
    (["run", "--config", "{root}/a-folder"], "cannot read config"),
    (["eval", "--model", TINY, "--data", D, "--noise", "{root}/not-yaml.yaml"], "is not valid YAML"),
    (["eval", "--model", TINY, "--data", D, "--noise", "{root}/noise-list.yaml"], "must be a mapping"),
    (["noise", "fit", "{root}/missing.csv", "--out", "{root}/chip.yaml"], "cannot read measurement file"),
    (["noise", "fit", "{root}/empty.csv", "--out", "{root}/chip.yaml"], "empty.csv"),
    (["noise", "fit", "{root}/wrong-columns.csv", "--out", "{root}/chip.yaml"], "target_us"),
    (["noise", "fit", "{root}/not-numbers.csv", "--out", "{root}/chip.yaml"], "not-numbers.csv"),
    (["noise", "fit", "{root}/few-rows.csv", "--out", "{root}/chip.yaml"], "few-rows.csv"),
    (["noise", "fit", "{root}/wrong-columns.csv", "--out", "{root}/a-file"], "must end in .yaml"),
    (["run", "--model", TINY, "--data", D, "--out", "{root}/a-file"], "is a file, not a folder"),
    (["run", "--model", TINY, "--data", D, "--out", "{root}/a-file/sub"], "cannot create"),
    (["run", "--model", TINY, "--data", D, "--out", "{root}/corrupt-run"], "run.json is not valid JSON"),
    (["calibrate", "--model", TINY, "--data", D, "--save", "{root}/a-file", "--max-tokens", "0"], "is a file"),
    (["profile", "--model", TINY, "--data", D, "--out", "{root}/a-file"], "is a file, not a folder"),
    (["diagnose", "--model", TINY, "--data", D, "--calib-data", D, "--out", "{root}/a-file"], "is a file, not a folder"),
    # numbers: out of range and absurd
    (["eval", "--model", TINY, "--data", D, "--window", "0"], "--window must be at least 2"),
    (["eval", "--model", TINY, "--data", D, "--window", "1"], "--window must be at least 2"),
    (["eval", "--model", TINY, "--data", D, "--window", "100000000"], "--window must be at most 131072"),
    (["eval", "--model", TINY, "--data", D, "--stride", "0"], "--stride must be at least 1"),
    (["eval", "--model", TINY, "--data", D, "--batch-size", "0"], "--batch-size must be at least 1"),
    (["eval", "--model", TINY, "--data", D, "--batch-size", "1000000"], "--batch-size must be at most 4096"),
    (["eval", "--model", TINY, "--data", D, "--max-tokens", "-5"], "--max-tokens must be at least 2"),
    (["eval", "--model", TINY, "--data", D, "--noise", "gaussian", "--seeds", "0-100000000"], "at most 10,000"),
    (["eval", "--model", TINY, "--data", D, "--noise", "gaussian", "--seeds", "-1"], "cannot read seeds"),
    (["eval", "--model", TINY, "--data", D, "--noise", "gaussian:strength=1e9"], "noise field 'strength'"),
    (["eval", "--model", TINY, "--data", D, "--noise", "gaussian:sigma_dev=abc"], "noise field 'sigma_dev'"),
    (["eval", "--model", TINY, "--data", D, "--noise", "gaussian:roles=brain"], "unknown role 'brain'"),
    (["eval", "--model", TINY, "--data", D, "--noise", "nope"], "unknown noise preset 'nope'"),
    (["eval", "--model", TINY, "--data", D, "--device", "tpu"], "unknown device 'tpu'"),
    (["eval", "--model", TINY, "--data", D, "--dtype", "int3"], "unknown dtype 'int3'"),
    (["run", "--model", TINY, "--data", D, "--seeds", "0-20000", "--out", "{root}/o1"], "at most 10,000"),
    (["run", "--model", TINY, "--data", D, "--methods", "magic", "--out", "{root}/o2"], "unknown method 'magic'"),
    (["run", "--model", TINY, "--data", D, "--set", "q_low=80,q_high=20", "--out", "{root}/o3"], "calibration option 'q_low'"),
    (["run", "--model", TINY, "--data", D, "--set", "lam=abc", "--out", "{root}/o4"], "calibration option 'lam'"),
    (["run", "--model", TINY, "--data", D, "--set", "tau=7", "--out", "{root}/o5"], "calibration option 'tau'"),
    (["run", "--model", TINY, "--data", D, "--set", "flavour=1", "--out", "{root}/o6"], "unknown calibration option"),
    (["run", "--model", TINY, "--data", D, "--set", "router=magic", "--out", "{root}/o7"], "calibration option 'router'"),
    (["run", "--model", TINY, "--data", D, "--set", "tau", "--out", "{root}/o8"], "cannot read 'tau' in --set"),
    (["run", "--model", TINY, "--data", D, "--task-limit", "0", "--out", "{root}/o9"], "--task-limit must be at least 1"),
    (["run", "--model", TINY, "--data", D, "--max-tokens", "0", "--out", "{root}/o10"], "--max-tokens must be at least 2"),
    (["run", "--model", TINY, "--data", D, "--window", "0", "--out", "{root}/o11"], "--window must be at least 2"),
    (["sweep", "--model", TINY, "--data", D, "--strengths", "-1", "--out", "{root}/o12"], "noise field 'strength'"),
    (["sweep", "--model", TINY, "--data", D, "--vary", "sigma_dev=a,b", "--out", "{root}/o13"], "noise field 'sigma_dev'"),
    (["sweep", "--model", TINY, "--data", D, "--vary", "mode=digital", "--out", "{root}/o14"], "noise field 'mode'"),
    (["sweep", "--model", TINY, "--data", D, "--vary", "adc_group=0", "--out", "{root}/o15"], "noise field 'adc_group'"),
    (["sweep", "--model", TINY, "--data", D, "--vary", "brain=1", "--out", "{root}/o16"], "not a noise field"),
    (["calibrate", "--model", TINY, "--data", D, "--seed", "-1"], "--seed must be a non-negative integer"),
    (["calibrate", "--model", TINY, "--data", D, "--method", "magic"], "unknown method 'magic'"),
    (["calibrate", "--model", TINY, "--data", D, "--max-tokens", "-1"], "--max-tokens must be at least 0"),
    (["profile", "--model", TINY, "--data", D, "--seed", "-3"], "--seed must be a non-negative integer"),
    (["diagnose", "--model", TINY, "--data", D, "--tokens", "0"], "--tokens must be at least 2"),
    (["diagnose", "--model", TINY, "--data", D, "--seeds", "0-99999"], "at most 10,000"),
    (["estimate", "--model", TINY, "--memory-gib", "-1"], "--memory-gib must be positive"),
    (["estimate", "--model", TINY, "--window", "0"], "--window must be at least 2"),
    (["estimate", "--model", TINY, "--batch-size", "0"], "--batch-size must be at least 1"),
    (["estimate", "--model", "{root}/a-file"], "is a file, not a model folder"),
    # a chip in the field: moments a chip cannot be read at (issue 43)
    (["age", "--calibrate-at", "1y@25C", "--times", "1h"], "time '1h' is before the calibration at '1y@25C'"),
    (["age", "--times", "0s"], "time '0s' is before the calibration"),
    (["age", "--calibrate-at", "0s@25C", "--times", "1h"], "is the programming itself"),
    (["age", "--times", "200y"], "'time_s'"),
    (["age", "--times", "1e30s"], "'time_s'"),
    (["age", "--times", "1h,60min"], "times list '60min' twice"),
    (["age", "--temperatures", "25,25"], "lists a temperature twice"),
    (["age", "--temperatures", "500"], "'temperature_c'"),
    (["age", "--temperatures", "-300"], "'temperature_c'"),
    (["age", "--calibrate-at", "1h@900C"], "'temperature_c'"),
    (["age", "--calibrate-at", "1h"], "calibrate_at needs a time and a temperature"),
    (["age", "--times", "-1h"], "cannot read the condition '-1h'"),
    (["age", "--times", "soon"], "cannot read the condition 'soon'"),
    (["cost", "--model", TINY, "--chip-cost", "nope"], "unknown chip-cost preset 'nope'"),
    (["cost", "--model", TINY, "--batch", "0"], "--batch must be at least 1"),
    (["cost", "--model", TINY, "--context", "-5"], "--context must be 0 or more"),
    (["cost", "--run", "{root}"], "holds no results.jsonl"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(world, tiny_moe_dir, args, message):
    fill = lambda text: text.replace("{root}", str(world)).replace("{tiny}", str(tiny_moe_dir))  # noqa: E731
    before = fingerprint(world)
    result = runner.invoke(app, [fill(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    stderr = result.stderr.strip()
    assert fill(message) in stderr, stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in result.output, result.output
    after = fingerprint(world)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the user's changed


def _plugin(folder, name: str, body: str):
    (folder / f"{name}.py").write_text(body)
    info = folder / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[romer.methods]\n{name} = {name}\n")
    return folder


@pytest.mark.parametrize("body, words", [
    ("import a_module_nobody_has\n", "the calibration plugin 'hostile' (hostile) failed to load: ModuleNotFoundError"),
    ("from romer.calibration.registry import Method, register_method\nregister_method(Method('romer', 'mine'))\n",
     "the calibration plugin 'hostile' (hostile): calibration method 'romer' is already registered by "
     "romer.calibration.methods.romer; hostile registers it again"),
], ids=["fails-to-import", "takes-a-name"])
@pytest.mark.parametrize("command", [["methods"], ["calibrate", "--method", "rc", "--max-tokens", "0"],
                                     ["run", "--seeds", "0", "--methods", "none"], ["age"]])
def test_a_broken_plugin_ends_every_command_in_one_line(tmp_path, body, words, command):
    import os
    import subprocess
    import sys

    folder = _plugin(tmp_path, "hostile", body)
    if command[0] in ("run", "age"):
        command = [*command, "--out", str(tmp_path / "out")]
    env = os.environ | {"PYTHONPATH": str(folder), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "romer.cli", *command], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("build, words", [
    (lambda: __import__("romer").NoiseConfig(sigma_dev=-1), "noise field 'sigma_dev': Input should be greater than or "
                                                            "equal to 0 (got -1)"),
    (lambda: __import__("romer").NoiseConfig(colour=1), "unknown noise field 'colour'; `romer presets` lists"),
    (lambda: __import__("romer").CalibrationConfig(tau=5), "calibration option 'tau': Input should be less than or "
                                                           "equal to 1 (got 5)"),
    (lambda: __import__("romer.noise", fromlist=["Condition"]).Condition(temperature_c=900),
     "condition field 'temperature_c': Input should be less than or equal to 200 (got 900)"),
    (lambda: __import__("romer.data.generated", fromlist=["GenerationRecipe"]).GenerationRecipe(top_p=2),
     "generated-text setting 'top_p': Input should be less than or equal to 1 (got 2)"),
], ids=["noise-range", "noise-unknown", "calibration-range", "condition-range", "recipe-range"])
def test_a_library_value_object_refuses_a_bad_value_in_one_line(build, words):
    from romer.errors import RomerError

    with pytest.raises(RomerError) as caught:
        build()
    assert words in str(caught.value) and "\n" not in str(caught.value)
