"""A model of a published shape with seeded random weights, written to disk as its hub checkpoint would be.

    write_random_checkpoint("bench/configs/olmoe-1b-7b", "runs/olmoe-random", dtype="bfloat16")

The paper's models cost what their shapes cost: a random-weight model of OLMoE-1B-7B's exact shape
loads, programs, evaluates and calibrates in the time and memory the real one does (its perplexities
mean nothing, and every record made from it says the weights are random). The checkpoint is written
one decoder layer at a time, in the tensor names and per-expert layout of the family's published
checkpoints (transformers' own reverse weight conversion), so loading it walks a user's path; the
process never holds more than one layer's tensors. Every tensor is drawn from its own generator,
seeded by (seed, tensor name): the same seed writes the same bytes, whatever the shard layout.
Matrices and embeddings are N(0, initializer_range²) as transformers initialises them; 1-D tensors
(norm gains) are ones.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch

from romer.atomic import write_text_atomic
from romer.errors import RomerError

RANDOM_WEIGHTS_NOTE = "random_weights.json"


def tensor_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int, std: float) -> torch.Tensor:
    """One tensor's seeded draw: ones for a 1-D gain, N(0, std²) otherwise, drawn in float32 then cast."""
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    out = torch.empty(shape, dtype=dtype)
    rows = out.view(-1, shape[-1])
    step = max(1, 2**24 // shape[-1])  # at most 64 MiB of float32 scratch at a time
    for start in range(0, rows.shape[0], step):
        block = rows[start:start + step]
        block.copy_(torch.randn(block.shape, generator=generator) * std)
    return out


def shape_config(config_folder: str | Path, layers: int | None = None, **overrides):
    """The config of `config_folder` (a folder with config.json), optionally cut to its first `layers` layers."""
    from romer.models import load_config

    config = load_config(Path(config_folder))
    total = config.get_text_config().num_hidden_layers
    if layers is not None:
        if not 1 <= layers <= total:
            raise RomerError(f"--layers {layers} is outside 1..{total}, the decoder layers of {config_folder}")
        overrides["num_hidden_layers"] = layers
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part == "layers" and parts[index + 1].isdigit():
            return int(parts[index + 1])
    return None


def write_random_checkpoint(config_folder: str | Path, out: str | Path, *, layers: int | None = None,
                            dtype: str = "bfloat16", seed: int = 0, tokenizer_from: str = "romer-tiny",
                            **overrides) -> Path:
    """Write `out` (config.json, one safetensors shard per decoder layer plus one for the rest, the index, a
    tokenizer borrowed from `tokenizer_from`, and `random_weights.json` saying what this is). A shard already
    written with the same recipe is kept, so an interrupted build resumes."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    from romer.models import DTYPES, resolve_model_path

    if dtype not in DTYPES:
        raise RomerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    config = shape_config(config_folder, layers, **overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = {"source_config": str(config_folder), "layers": config.get_text_config().num_hidden_layers,
              "dtype": dtype, "seed": seed, "overrides": overrides,
              "weights": "random: N(0, initializer_range^2) per matrix, seeded by (seed, tensor name); "
                         "norm gains 1. Perplexities of this model mean nothing; times and memory are its shape's."}
    note = out / RANDOM_WEIGHTS_NOTE
    if note.exists() and json.loads(note.read_text()) != recipe:
        raise RomerError(f"{out} holds a model built with another recipe; pass an empty folder or remove {out}")
    write_text_atomic(note, json.dumps(recipe, indent=1))  # first: a resumed build checks its shards' recipe
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    std = float(getattr(config.get_text_config(), "initializer_range", 0.02))
    groups: dict[int | None, dict[str, torch.Size]] = {}
    for name, tensor in skeleton.state_dict().items():
        groups.setdefault(_layer_of(name), {})[name] = tensor.shape
    order = sorted((k for k in groups if k is not None)) + [None]
    weight_map: dict[str, str] = {}
    for group in order:
        shard = f"model-{'rest' if group is None else f'layer-{group:03d}'}.safetensors"
        shapes = groups[group]
        path = out / shard
        if path.exists():
            from safetensors import safe_open

            with safe_open(path, "pt") as handle:
                names = list(handle.keys())
        else:
            tensors = {name: random_tensor(name, tuple(shape), DTYPES[dtype], seed, std)
                       for name, shape in shapes.items()}
            tensors = {k: v.contiguous() for k, v in revert_weight_conversion(skeleton, tensors).items()}
            names = list(tensors)
            staging = path.with_suffix(".partial")
            save_file(tensors, staging, metadata={"format": "pt"})
            staging.replace(path)
            del tensors
        weight_map.update({name: shard for name in names})
    config.save_pretrained(out)
    write_text_atomic(out / "model.safetensors.index.json",
                      json.dumps({"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}, indent=1))
    tokenizer = resolve_model_path(tokenizer_from)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer / name).exists():
            (out / name).write_bytes((tokenizer / name).read_bytes())
    return out
