import json

import pytest
from typer.testing import CliRunner

from romer.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_eval_json_has_the_documented_fields(tiny_moe_dir, sample_txt):
    code, stdout, _ = run("eval", "--model", str(tiny_moe_dir), "--data", str(sample_txt),
                          "--window", "32", "--stride", "16", "--json")
    assert code == 0
    record = json.loads(stdout)
    assert record["model_path"] == str(tiny_moe_dir)
    assert set(record["dataset"]) >= {"name", "split", "tokens", "sha256"}
    assert record["dataset"]["name"] == str(sample_txt) and record["dataset"]["tokens"] > 1000
    assert (record["window"], record["stride"]) == (32, 16)
    assert record["ppl"] > 1 and record["scored_tokens"] == record["dataset"]["tokens"] - 1


def test_eval_table_output(tiny_moe_dir, sample_txt):
    code, stdout, _ = run("eval", "--model", str(tiny_moe_dir), "--data", str(sample_txt), "--window", "32",
                          "--max-tokens", "200")
    assert code == 0 and "perplexity" in stdout and "200 tokens" in stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model"], "model path /no/such/model does not exist"),
    (["--data", "nonsense"], "unknown dataset 'nonsense'"),
    (["--window", "100000"], "fewer than one window of 100000"),
    (["--stride", "64", "--window", "32"], "--stride must be between 1 and the window"),
    (["--max-tokens", "1"], "--max-tokens must be at least 2"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_moe_dir, sample_txt, args, message):
    base = {"--model": str(tiny_moe_dir), "--data": str(sample_txt)}
    for flag in ("--model", "--data"):
        if flag not in args:
            args = [flag, base[flag], *args]
    code, stdout, stderr = run("eval", *args)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1


def test_dense_and_non_causal_models_via_cli(dense_dir, encoder_dir, sample_txt):
    code, _, stderr = run("eval", "--model", str(dense_dir), "--data", str(sample_txt))
    assert code == 2 and "romer needs a mixture-of-experts model" in stderr
    code, _, stderr = run("eval", "--model", str(encoder_dir), "--data", str(sample_txt))
    assert code == 2 and "not a causal language model" in stderr


def test_eval_with_noise_reports_each_seed(tiny_moe_dir, sample_txt):
    code, stdout, _ = run("eval", "--model", str(tiny_moe_dir), "--data", str(sample_txt), "--window", "32",
                          "--max-tokens", "400", "--noise", "gaussian:sigma_dev=0.1", "--seeds", "0-2", "--json")
    assert code == 0
    record = json.loads(stdout)
    assert record["seeds"] == [0, 1, 2] and [n["seed"] for n in record["noisy"]] == [0, 1, 2]
    assert record["noise"]["sigma_dev"] == 0.1
    values = [n["ppl"] for n in record["noisy"]]
    assert len(set(values)) == 3 and record["noisy_ppl_mean"] == pytest.approx(sum(values) / 3)


@pytest.mark.parametrize("args, message", [
    (["--noise", "nope"], "unknown noise preset 'nope'"),
    (["--noise", "gaussian:sigma_dev=-1"], "noise field 'sigma_dev'"),
    (["--noise", "gaussian", "--seeds", "a,b"], "cannot read seeds 'a,b'"),
    (["--noise", "gaussian", "--seeds", "1,1"], "must be distinct"),
])
def test_bad_noise_input(tiny_moe_dir, sample_txt, args, message):
    code, _, stderr = run("eval", "--model", str(tiny_moe_dir), "--data", str(sample_txt), *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_presets_lists_every_preset_and_field():
    code, stdout, _ = run("presets", "--json")
    assert code == 0
    presets = json.loads(stdout)
    assert {"ideal", "gaussian", "cim-25c", "cim-80c", "pcm", "reram"} <= set(presets)
    code, stdout, _ = run("presets")
    assert code == 0 and "sigma_dev" in stdout and "Nandakumar" in stdout


def test_noise_fit_writes_a_preset_that_eval_uses(tmp_path, tiny_moe_dir, sample_txt):
    from tests.test_noise_config import synthetic_measurements

    csv = tmp_path / "chip.csv"
    synthetic_measurements(csv)
    out = tmp_path / "my-chip.yaml"
    code, stdout, stderr = run("noise", "fit", str(csv), "--out", str(out))
    assert code == 0, stderr
    assert out.exists() and "wrote" in stdout
    code, stdout, _ = run("eval", "--model", str(tiny_moe_dir), "--data", str(sample_txt), "--window", "32",
                          "--max-tokens", "200", "--noise", f"{out}:temperature_c=85", "--json")
    assert code == 0 and json.loads(stdout)["noise"]["name"] == "chip"
    code, _, stderr = run("noise", "fit", str(tmp_path / "none.csv"), "--out", str(out))
    assert code == 2 and "cannot read measurement file" in stderr


def test_profile_json_and_heatmap(tiny_moe_dir, sample_txt, tmp_path):
    code, stdout, stderr = run("profile", "--model", str(tiny_moe_dir), "--data", str(sample_txt), "--window", "32",
                               "--noise", "cim-80c", "--seed", "1", "--out", str(tmp_path / "p"), "--json")
    assert code == 0, stderr
    record = json.loads(stdout)
    assert len(record["layers"]) == len(record["noisy_layers"]) == len(record["topk_agreement"]) == 2
    for layer in record["layers"] + record["noisy_layers"]:
        assert len(layer["frequency"]) == 8 and sum(layer["frequency"]) == pytest.approx(1.0)
        assert {"cv", "entropy", "starved"} <= set(layer)
    assert all(0 <= a <= 1 for a in record["topk_agreement"])
    assert (tmp_path / "p" / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "p" / "profile.json").read_text()) == record


def test_profile_clean_only_and_dense_model(tiny_moe_dir, dense_dir, sample_txt):
    code, stdout, _ = run("profile", "--model", str(tiny_moe_dir), "--data", str(sample_txt), "--window", "32", "--json")
    assert code == 0 and "noisy_layers" not in json.loads(stdout)
    code, _, stderr = run("profile", "--model", str(dense_dir), "--data", str(sample_txt))
    assert code == 2 and "has no MoE layers" in stderr


def test_calibrate_command_reports_and_saves(tiny_moe_dir, texts, tmp_path):
    evaluation, calibration = texts
    code, stdout, stderr = run("calibrate", "--model", str(tiny_moe_dir), "--data", str(evaluation), "--calib-data",
                               str(calibration), "--noise", "gaussian:sigma_dev=0.1", "--seed", "2", "--method", "rc",
                               "--max-tokens", "256", "--save", str(tmp_path / "saved"), "--json")
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["noisy_ppl"] != record["clean_ppl"] and record["calibrated_ppl"] > 1
    assert record["calibration"]["method"] == "rc" and len(record["calibration"]["router"]) == 2
    assert record["calib_data"]["name"] == str(calibration)
    assert (tmp_path / "saved" / "romer_calibration.json").is_file()
    code, stdout, _ = run("calibrate", "--model", str(tiny_moe_dir), "--data", str(evaluation), "--calib-data",
                          str(calibration), "--noise", "gaussian:sigma_dev=0.1", "--method", "rc", "--max-tokens", "0")
    assert code == 0 and "router transforms" in stdout and "perplexity clean" not in stdout


def test_estimate_json_includes_the_retune_fit(tiny_moe_dir):
    code, stdout, _ = run("estimate", "--model", str(tiny_moe_dir), "--window", "64", "--memory-gib", "1", "--json")
    assert code == 0
    record = json.loads(stdout)
    assert record["retune_peak_bytes"] <= record["retune_peak_bytes_unchecked"]
    assert record["retune_peak_bytes"] > record["weights_bytes"] and record["fits"] is True
    code, stdout, _ = run("estimate", "--model", str(tiny_moe_dir), "--window", "64", "--memory-gib", "1")
    assert code == 0 and "retune fit" in stdout and "fits in 1.00 GiB" in stdout


@pytest.mark.parametrize("args, message", [
    (["--times", "soon"], "write TIME[@TEMPERATURE], e.g. 1h@25C"),  # brackets in a message are printed, not markup
    (["--temperatures", "hot"], "cannot read --temperatures 'hot'"),
    (["--calibrate-at", "1h"], "calibrate_at needs a time and a temperature"),
])
def test_bad_age_input_is_one_line_and_exit_2(tmp_path, args, message):
    code, stdout, stderr = run("age", *args, "--out", str(tmp_path / "age"))
    assert code == 2 and message in stderr and "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1
