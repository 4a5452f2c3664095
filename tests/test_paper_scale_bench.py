"""bench/paper_scale.py, the harness a GPU session runs for issue 15: every part measured and recorded on a
tiny shape on the CPU, resumable, refusing a record made with other settings; and the paper's three shapes
as written in bench/configs have the published sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import Qwen2MoeConfig

from romer.scale.memory import meta_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "paper_scale.py"


@pytest.mark.parametrize("name, billions", [("olmoe-1b-7b", 6.92), ("qwen1.5-moe-a2.7b", 14.32),
                                            ("deepseek-moe-16b", 16.38)])
def test_paper_shapes_have_the_published_sizes(name, billions):
    model, _ = meta_model(ROOT / "bench" / "configs" / name)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions


def test_deepseek_shape_differs_from_the_published_model_only_by_the_shared_expert_gates():
    model, config = meta_model(ROOT / "bench" / "configs" / "deepseek-moe-16b")
    gates = sum(p.numel() for n, p in model.named_parameters() if "shared_expert_gate" in n)
    assert gates == (config.num_hidden_layers - 1) * config.hidden_size  # layer 0 is dense, as published
    assert not any(n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")) for n, _ in model.named_parameters())


def run(args, out):
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def tiny_shape(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shape")
    Qwen2MoeConfig(vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                   shared_expert_intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=4, num_experts=8, num_experts_per_tok=2, mlp_only_layers=[0],
                   max_position_embeddings=128).save_pretrained(folder)
    return folder


TINY = ["--device", "cpu", "--dtype", "float32", "--window", "32", "--batch", "2", "--eval-tokens", "256",
        "--calib-tokens", "512", "--retune-steps", "3", "--repeats", "1", "--methods", "romer,retune",
        "--table-methods", "romer"]


def test_every_part_is_measured_recorded_and_resumed(tiny_shape, tmp_path):
    done = run(["--config", str(tiny_shape), *TINY, "--save-load"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / f"{tiny_shape.name}.json").read_text())
    assert {"build", "run", "calibrate:romer", "calibrate:retune", "table"} <= set(record)
    build, measured = record["build"], record["run"]
    assert build["load_s"] > 0 and build["checkpoint_bytes"] >= build["weights_bytes"]
    assert not list((tmp_path / f"{tiny_shape.name}-model").glob("*.safetensors"))  # removed without --keep
    assert measured["on_chip_parameters"] < build["parameters"]
    assert measured["noisy_ppl"] != measured["clean_ppl"]
    assert measured["program_s"] > 0 and measured["analog_slowdown"] > 0
    # a chip runs the eager experts: the clean model is timed on them too whenever it defaults to another kernel
    assert measured["experts_implementation"] == "eager" or measured["clean_eager_s"] > 0
    assert measured["estimate"]["parameters"] == build["parameters"]
    retune = record["calibrate:retune"]
    assert retune["steps"] == 3 and retune["calibrate_s_at_default_steps"] > retune["calibrate_s"]
    table = record["table"]
    assert table["methods"] == ["none", "romer"] and set(table["calibrate_s"]) == {"romer"}
    assert table["total_s"] > 2 * 5 * (measured["program_s"] + sum(table["calibrate_s"].values()))
    assert "goal noisy eval ≤ 1.05× clean" in done.stdout and "the paper's table" in done.stdout

    again = run(["--config", str(tiny_shape), *TINY], tmp_path)  # every part on record: nothing is built
    assert again.returncode == 0 and json.loads((tmp_path / f"{tiny_shape.name}.json").read_text())["run"] == measured
    other = run(["--config", str(tiny_shape), *TINY, "--window", "16"], tmp_path)
    assert other.returncode == 1 and other.stderr.strip().count("\n") == 0
    assert "other settings" in other.stderr and "--force" in other.stderr
