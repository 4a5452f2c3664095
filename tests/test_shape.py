"""The random-weight model of a published shape, written one layer at a time (issue 42), at a narrow size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import romer
from romer.errors import RomerError
from romer.scale.shape import RANDOM_WEIGHTS_NOTE, write_random_checkpoint

OLMOE = Path(__file__).parents[1] / "bench" / "configs" / "olmoe-1b-7b"
NARROW = dict(hidden_size=64, intermediate_size=32, num_experts=8, num_experts_per_tok=2, num_attention_heads=4,
              num_key_value_heads=4, vocab_size=512)


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def test_the_shape_loads_as_a_user_would_in_its_dtype(tmp_path):
    folder = write_random_checkpoint(OLMOE, tmp_path / "m", layers=2, dtype="bfloat16", **NARROW)
    assert len(list(folder.glob("model-layer-*.safetensors"))) == 2
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in index  # the published per-expert layout
    model, _ = romer.load_model(str(folder), dtype="bfloat16")
    assert model.config.num_hidden_layers == 2 and next(model.parameters()).dtype == torch.bfloat16
    weights = model.model.layers[1].mlp.experts.gate_up_proj.float()
    assert weights.std().item() == pytest.approx(0.02, rel=0.05) and abs(weights.mean().item()) < 2e-3
    assert torch.equal(model.model.layers[0].input_layernorm.weight.float(), torch.ones(64))
    assert "random" in json.loads((folder / RANDOM_WEIGHTS_NOTE).read_text())["weights"]


def test_same_seed_same_bytes_other_seed_other_bytes_and_a_rerun_resumes(tmp_path):
    first = write_random_checkpoint(OLMOE, tmp_path / "a", layers=1, dtype="float32", **NARROW)
    second = write_random_checkpoint(OLMOE, tmp_path / "b", layers=1, dtype="float32", **NARROW)
    other = write_random_checkpoint(OLMOE, tmp_path / "c", layers=1, dtype="float32", seed=1, **NARROW)
    assert digest(first) == digest(second) != digest(other)
    before = {p.name: p.stat().st_mtime_ns for p in first.glob("*.safetensors")}
    write_random_checkpoint(OLMOE, first, layers=1, dtype="float32", **NARROW)  # every shard there: none rewritten
    assert {p.name: p.stat().st_mtime_ns for p in first.glob("*.safetensors")} == before


def test_a_folder_of_another_recipe_or_a_bad_layer_count_is_refused(tmp_path):
    write_random_checkpoint(OLMOE, tmp_path / "m", layers=1, dtype="float32", **NARROW)
    with pytest.raises(RomerError, match="another recipe"):
        write_random_checkpoint(OLMOE, tmp_path / "m", layers=1, dtype="float32", seed=3, **NARROW)
    with pytest.raises(RomerError, match="outside 1..16"):
        write_random_checkpoint(OLMOE, tmp_path / "n", layers=17, **NARROW)
