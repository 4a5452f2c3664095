import json
import shutil
import subprocess
import sys

import pytest

from romer.errors import RomerError
from romer.models import load_model, resolve_model_path
from romer.moe import find_moe_blocks


def test_local_moe_folder_loads_with_its_blocks(tiny_moe_dir):
    model, tokenizer = load_model(str(tiny_moe_dir))
    assert model.name_or_path == str(tiny_moe_dir) and not model.training
    blocks = find_moe_blocks(model)
    assert [b.num_experts for b in blocks] == [8, 8]
    assert tokenizer("def f(): pass")["input_ids"]


def test_bfloat16_dtype(tiny_moe_dir):
    model, _ = load_model(str(tiny_moe_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype.__str__() == "torch.bfloat16"


def test_dense_model_is_refused(dense_dir):
    with pytest.raises(RomerError, match=f"romer needs a mixture-of-experts model; {dense_dir} has no MoE layers"):
        load_model(str(dense_dir))


def test_non_causal_model_is_refused(encoder_dir):
    with pytest.raises(RomerError, match="holds a 'vit' model, which is not a causal language model"):
        load_model(str(encoder_dir))


def test_missing_path_and_folder_without_config(tmp_path):
    with pytest.raises(RomerError, match="model path ./nowhere/model does not exist"):
        load_model("./nowhere/model")
    with pytest.raises(RomerError, match="is not a Hugging Face model folder"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("dtype, device, message", [
    ("float8", "cpu", "unknown dtype 'float8'"),
    ("float32", "tpu:7", "unknown device 'tpu:7'"),
])
def test_bad_dtype_and_device(tiny_moe_dir, dtype, device, message):
    with pytest.raises(RomerError, match=message):
        load_model(str(tiny_moe_dir), dtype=dtype, device=device)


def test_remote_code_needs_the_explicit_flag(tiny_moe_dir, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_moe_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_moe", auto_map={"AutoConfig": "configuration_my_moe.MyMoeConfig",
                                                  "AutoModelForCausalLM": "modeling_my_moe.MyMoe"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_my_moe.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(RomerError, match="ships its own model code; rerun with --trust-remote-code"):
        load_model(str(folder))


def test_pickle_weights_need_the_explicit_flag(tiny_moe_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_moe_dir, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(RomerError, match="only pickle weights, which can run code"):
        load_model(str(folder))


def test_hub_id_offline_gives_one_clear_line():
    code = ("from romer.models import resolve_model_path\nfrom romer.errors import RomerError\n"
            "try:\n    resolve_model_path('allenai/OLMoE-1B-7B-0924')\nexcept RomerError as e:\n    print(e)\n")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp/romer-no-cache"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)  # generous: a loaded machine is slow, never wrong
    assert "could not download allenai/OLMoE-1B-7B-0924 from the Hugging Face Hub" in result.stdout
    assert "pass its path with --model" in result.stdout


def test_embedded_name_resolves_inside_the_package():
    assert resolve_model_path("romer-tiny").name == "romer-tiny"


def test_remote_code_checkpoint_loads_only_with_the_flag(tmp_path):
    from tests.families import deepseek_moe_folder

    folder = deepseek_moe_folder(tmp_path / "deepseek-moe")
    with pytest.raises(RomerError, match="ships its own model code; rerun with --trust-remote-code"):
        load_model(str(folder))
    with pytest.raises(RomerError, match="ships its own model code"):
        load_model(str(folder), trust_remote_code=False)
