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
