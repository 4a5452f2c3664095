"""Calibration text the clean model writes itself, before any noise is applied.

A per-chip fit compares the noisy chip with its clean twin; it needs text to compare on, not labels, and the clean
model can write that text. LLM-QAT (Liu et al., 2023, arXiv 2305.17888, §2.1) distils quantised LLaMA models on text
sampled from the full-precision model: the first token drawn uniformly from the vocabulary, a few greedy tokens, then
sampling. The recipe here is that one, every knob named and seeded:

    generated:32768                         32,768 tokens, the default recipe
    generated:118089@temperature=0.8@greedy=3
    stdlib+generated:65536                  the user's text first, then the model's (a mix)

Sequence i is drawn from its own generator, seeded by (seed, i), by inverse CDF on one uniform number per token, and
sequences are always written in whole batches (sequences [b·batch, (b+1)·batch) together): so the first N tokens of
a longer draw are the N-token draw, bit for bit, and the cache keeps one draw per recipe, extended when more is asked.
The batch stays in the recipe: a batch of another size sums its logits in another order, and a token drawn near a
boundary of the CDF can then differ (36 of 2,048 tokens did on romer-tiny between batches of 3 and 4). The tokens are cached under $ROMER_CACHE/generated (default ~/.cache/romer), keyed by the
model's fingerprint and the recipe: a campaign writes them once and every chip shares them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from romer.atomic import write_text_atomic
from romer.errors import RomerError
from romer.progress import progress_bar
from romer.validation import OneLineErrors, build

SOURCE = "generated"
CACHE_VERSION = 1


class GenerationRecipe(OneLineErrors):
    """How the clean model writes its calibration text; every field is part of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _noun: ClassVar[str] = "generated-text setting"
    _where_listed: ClassVar[str] = "a generated text takes tokens, sequence, temperature, top_p, first, greedy, seed, batch"

    tokens: int = Field(32768, ge=1, description="tokens written (the stream is cut to this length)")
    sequence: int = Field(0, ge=0, description="tokens per sequence, the first one included; 0: the run's window")
    temperature: float = Field(1.0, gt=0, le=10, description="softmax temperature of the sampled tokens")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus: sample among the most likely tokens that hold this "
                                                      "much probability (1: the whole vocabulary)")
    first: Literal["uniform", "bos"] = Field("uniform", description="the first token: uniform over the vocabulary "
                                                                    "less special tokens (LLM-QAT), or the BOS token")
    greedy: int = Field(0, ge=0, description="tokens after the first taken greedily (LLM-QAT uses 3 to 5)")
    seed: int = Field(0, ge=0, description="seed of the first tokens and of every sampled token")
    batch: int = Field(16, ge=1, description="sequences written at once (the text depends on it only through rounding)")

    def describe(self) -> str:
        fields = self.model_dump()
        return f"{SOURCE}:{fields.pop('tokens')}" + "".join(f"@{k}={v}" for k, v in fields.items())


def is_generated(part: str) -> bool:
    return part == SOURCE or part.startswith(SOURCE + ":") or part.startswith(SOURCE + "@")


def parse_recipe(part: str) -> GenerationRecipe:
    """`generated[:N][@key=value...]` → a validated recipe; a bad part is refused in one line."""
    head, *settings = part.split("@")
    fields: dict = {}
    if ":" in head:
        count = head.split(":", 1)[1].replace("_", "")
        if not count.isdigit():
            raise RomerError(f"'{part}': the token count after 'generated:' must be a whole number, e.g. generated:32768")
        fields["tokens"] = int(count)
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise RomerError(f"'{setting}' in '{part}' is not key=value; e.g. generated:32768@temperature=0.8")
        fields[key.strip()] = value.strip()
    return build(GenerationRecipe, fields, "generated-text setting",
                 f"a generated text takes {', '.join(GenerationRecipe.model_fields)}")


def cache_root() -> Path:
    return Path(os.environ.get("ROMER_CACHE") or Path.home() / ".cache" / "romer") / SOURCE


def model_fingerprint(model: nn.Module) -> str:
    """The model's configuration and a strided sample of every parameter: what the text depends on."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    fields = {k: v for k, v in (config.to_dict() if hasattr(config, "to_dict") else {}).items()
              if k not in ("_name_or_path", "dtype", "torch_dtype")}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, value in sorted(model.named_parameters()):
        sample = value.detach().flatten()[::1009].float().cpu()
        digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode() + sample.numpy().tobytes())
    return digest.hexdigest()


def cache_key(model: nn.Module, recipe: GenerationRecipe) -> str:
    """The model's fingerprint and every field of the recipe but the count: one file holds the longest draw, and a
    shorter one is its prefix (whole batches are always written, so a batch's sequences never depend on the count)."""
    key = [CACHE_VERSION, model_fingerprint(model), recipe.model_dump(exclude={"tokens"})]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def generate_ids(model: nn.Module, tokenizer, recipe: GenerationRecipe, window: int,
                 cache: Path | None = None, progress: bool = True) -> torch.Tensor:
    """The recipe's token stream (1-D, `recipe.tokens` long): the cached draw's prefix, the cached draw extended by
    the batches it lacks, or a new draw by the clean model."""
    recipe = recipe if recipe.sequence else recipe.model_copy(update={"sequence": window})
    if recipe.sequence < 2:
        raise RomerError(f"generated sequences of {recipe.sequence} tokens are too short; set sequence >= 2")
    folder = cache if cache is not None else cache_root()
    path = folder / f"{cache_key(model, recipe)}.json"
    cached = torch.tensor(json.loads(path.read_text())["ids"], dtype=torch.long) if path.is_file() else None
    done = 0 if cached is None else cached.numel() // (recipe.batch * recipe.sequence)  # whole batches on disk
    needed = batches_for(recipe)
    if done >= needed:
        return cached[: recipe.tokens]
    more = write_ids(model, tokenizer, recipe, progress, first_batch=done)
    ids = more if cached is None else torch.cat([cached[: done * recipe.batch * recipe.sequence], more])
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"recipe": recipe.model_dump(exclude={"tokens"}), "ids": ids.tolist()}))
    return ids[: recipe.tokens]


def batches_for(recipe: GenerationRecipe) -> int:
    sequences = -(-recipe.tokens // recipe.sequence)
    return -(-sequences // recipe.batch)


def ordinary_tokens(tokenizer, vocab: int) -> torch.Tensor:
    """The vocabulary less the tokenizer's special tokens: what a uniform first token is drawn from."""
    special = set(getattr(tokenizer, "all_special_ids", None) or [])
    return torch.tensor([t for t in range(vocab) if t not in special], dtype=torch.long)


def first_tokens(tokenizer, allowed: torch.Tensor, recipe: GenerationRecipe, indices: range) -> torch.Tensor:
    if recipe.first == "bos":
        bos = getattr(tokenizer, "bos_token_id", None)
        if bos is None:
            raise RomerError("the tokenizer has no BOS token; use first=uniform")
        return torch.full((len(indices),), int(bos), dtype=torch.long)
    draws = [torch.randint(allowed.numel(), (1,), generator=_generator(recipe.seed, i, 0)) for i in indices]
    return allowed[torch.cat(draws)]


def _generator(seed: int, sequence: int, stream: int) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}/{sequence}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)


def choose(logits: torch.Tensor, uniforms: torch.Tensor, recipe: GenerationRecipe, greedy: bool) -> torch.Tensor:
    """The next token of each row: argmax, or the inverse CDF of the tempered, nucleus-cut distribution at `uniforms`."""
    logits = logits.float()
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits / recipe.temperature, dim=-1)
    ordered, order = probs.sort(dim=-1, descending=True)
    cumulative = ordered.cumsum(-1)
    if recipe.top_p < 1:
        keep = (cumulative - ordered) < recipe.top_p  # the smallest set that holds top_p; the first always kept
        ordered = ordered * keep
        cumulative = ordered.cumsum(-1)
    target = uniforms.to(cumulative.device) * cumulative[:, -1]
    position = torch.searchsorted(cumulative, target.unsqueeze(-1)).clamp(max=ordered.shape[-1] - 1)
    return order.gather(-1, position).squeeze(-1)


@torch.no_grad()
def write_ids(model: nn.Module, tokenizer, recipe: GenerationRecipe, progress: bool = True,
              first_batch: int = 0) -> torch.Tensor:
    """Sample whole batches of sequences with the model's KV cache, on its device and in its dtype, from batch
    `first_batch` until the recipe's count is covered; every token of those batches is returned (a caller cuts)."""
    device = next(model.parameters()).device
    allowed = ordinary_tokens(tokenizer, int(model.get_output_embeddings().weight.shape[0]))  # once, not per batch
    batches = range(first_batch, batches_for(recipe))
    was_training = model.training
    model.eval()
    written = []
    try:
        with progress_bar("writing calibration text", len(batches) * recipe.batch * recipe.sequence,
                          enabled=progress) as advance:
            for batch in batches:
                indices = range(batch * recipe.batch, (batch + 1) * recipe.batch)
                written.append(_write_batch(model, tokenizer, allowed, recipe, indices, device, advance))
    finally:
        model.train(was_training)
    return torch.cat(written).flatten() if written else torch.empty(0, dtype=torch.long)


def _write_batch(model, tokenizer, allowed, recipe, indices, device, advance) -> torch.Tensor:
    generators = [_generator(recipe.seed, i, 1) for i in indices]
    tokens = first_tokens(tokenizer, allowed, recipe, indices).unsqueeze(1).to(device)
    out = [tokens]
    cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    past = None
    for position in range(1, recipe.sequence):
        result = model(input_ids=tokens, use_cache=True, **{cache_name: past})
        past = getattr(result, cache_name)
        uniforms = torch.cat([torch.rand(1, generator=g) for g in generators])
        tokens = choose(result.logits[:, -1], uniforms, recipe, greedy=position <= recipe.greedy).unsqueeze(1)
        out.append(tokens)
        advance(len(indices))
    advance(len(indices))
    return torch.cat(out, dim=1).cpu()
