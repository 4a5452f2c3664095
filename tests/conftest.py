"""Tiny models built from configs, offline: an MoE, a dense LM and a non-causal model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

SAMPLE_TEXT = "\n\n".join(
    f"def function_{i}(value):\n    return value * {i} + {i * i}  # line {i}\n" for i in range(400))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 300-token byte-level BPE trained on SAMPLE_TEXT."""
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator([SAMPLE_TEXT], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>").save_pretrained(folder)
    return folder


def _save(model, tokenizer_dir: Path, folder: Path) -> Path:
    model.save_pretrained(folder, safe_serialization=True)
    for file in tokenizer_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory, tokenizer_dir) -> Path:
    torch.manual_seed(0)
    config = OlmoeConfig(vocab_size=300, hidden_size=32, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, num_experts=8, num_experts_per_tok=2,
                         max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    model = OlmoeForCausalLM(config)
    with torch.no_grad():  # the default init leaves the router at zero; random logits make routing non-trivial
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5)
    return _save(model, tokenizer_dir, tmp_path_factory.mktemp("tiny-moe"))


@pytest.fixture(scope="session")
def dense_dir(tmp_path_factory, tokenizer_dir) -> Path:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=0, eos_token_id=0)
    return _save(LlamaForCausalLM(config), tokenizer_dir, tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vit")
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    return folder


@pytest.fixture
def sample_txt(tmp_path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_text(SAMPLE_TEXT)
    return path


@pytest.fixture
def texts(tmp_path):
    """Evaluation and calibration text files, disjoint halves of SAMPLE_TEXT."""
    evaluation = tmp_path / "eval.txt"
    evaluation.write_text(SAMPLE_TEXT[: len(SAMPLE_TEXT) // 2])
    calibration = tmp_path / "calib.txt"
    calibration.write_text(SAMPLE_TEXT[len(SAMPLE_TEXT) // 2:])
    return evaluation, calibration
