"""Measure a trained romer-tiny folder and write its model card (README.md) and card.json.

    python scripts/write_model_card.py romer/zoo/romer-tiny

Every number in the card is measured here with romer's own code, on `stdlib/test`.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from romer.data import load_corpus
from romer.evaluation import default_window, expert_load, perplexity, tokenize_stream
from romer.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)

    training = json.loads((args.folder / "training.json").read_text())
    model, tokenizer = load_model(str(args.folder))
    corpus = load_corpus("stdlib", "test")
    ids = tokenize_stream(tokenizer, corpus.text)
    window = default_window(model)
    started = time.time()
    result = perplexity(model, ids, window)
    eval_seconds = time.time() - started
    layers = expert_load(model, ids, window)
    config = model.config
    card = {
        "model": "romer-tiny",
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                    "num_attention_heads", "num_experts", "num_experts_per_tok",
                                                    "intermediate_size", "max_position_embeddings")},
        "training": training,
        "test": {"dataset": {**corpus.describe(), "tokens": int(ids.numel())}, **result.as_dict(),
                 "eval_seconds": round(eval_seconds, 1)},
        "load": [{"layer": i, **{k: v for k, v in m.as_dict().items() if k != "frequency"},
                  "frequency": [round(f, 5) for f in m.frequency]} for i, m in enumerate(layers)],
        "measured_with": {"python": platform.python_version(), "torch": torch.__version__},
    }
    (args.folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (args.folder / "README.md").write_text(render(card))
    print(f"test ppl {result.ppl:.3f}; per-layer cv {[round(m.cv, 3) for m in layers]}; "
          f"min share {[round(m.min_share, 2) for m in layers]}")


def render(card: dict) -> str:
    c, t, test = card["config"], card["training"], card["test"]
    h = t["hyperparameters"]
    rows = "\n".join(f"| {l['layer']} | {l['cv']:.3f} | {l['entropy']:.3f} | {l['gini']:.3f} | "
                     f"{l['min_share']:.2f}× | {l['max_share']:.2f}× | {l['starved']} |" for l in card["load"])
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [mixture-of-experts, olmoe, romer]
---
# romer-tiny

romer's embedded mixture-of-experts model: a stock transformers `{card['architecture']}`
with {card['parameters']:,} parameters, trained from scratch on the `stdlib/train` split (the
standard-library sources of the Python that trained it) so that romer's demo and tests run offline
on a laptop CPU. It is a test instrument for routing and load-balance studies, not a useful
language model. It loads with `romer.load_model("romer-tiny")` or
`AutoModelForCausalLM.from_pretrained(<this folder>)`.

## Architecture
| | |
|---|---|
| layers | {c['num_hidden_layers']} |
| hidden size | {c['hidden_size']}, {c['num_attention_heads']} heads |
| experts per MoE layer | {c['num_experts']} routed, top-{c['num_experts_per_tok']} (softmax, no re-normalisation), expert size {c['intermediate_size']} |
| vocabulary | {c['vocab_size']} (byte-level BPE trained on the same split) |
| context | {c['max_position_embeddings']} tokens |
| embeddings | tied input / output |

Many small experts with top-{c['num_experts_per_tok']} routing mirror the granularity of the paper's models
(OLMoE-1B-7B: 64 experts, top-8; Qwen1.5-MoE-A2.7B: 60, top-4), where losing one expert costs a
small share of capacity.

## Training
- data: `stdlib/train`, {t['train_data']['documents']} files, {t['train_data']['chars']:,} characters,
  {t['train_data']['tokens']:,} tokens, sha256 `{t['train_data']['sha256']}` (Python {t['python']})
- command: `{t['command']}`
- seed {t['seed']}; {h['steps']} steps of {h['batch']} × {h['seq']} tokens ({t['tokens_seen']:,} tokens seen);
  AdamW, lr {h['lr']} with {h['warmup']} warm-up steps and cosine decay to 10 %, weight decay 0.1, clip 1.0
- load balance: a Switch-style balance loss **per MoE layer** (weight {h['balance_coef']} each) plus router
  z-loss ({h['z_coef']}); transformers' built-in auxiliary loss balances only the sum over layers
- wall time {t['wall_time_s'] / 60:.1f} min on {h['threads']} CPU threads (torch {t['torch']})

## Evaluation on `stdlib/test`
Measured by `python scripts/write_model_card.py` with romer's own perplexity and routing code
(Python {card['measured_with']['python']}, torch {card['measured_with']['torch']}).

- {test['dataset']['documents']} files, {test['dataset']['tokens']:,} tokens, sha256 `{test['dataset']['sha256']}`
- perplexity **{test['ppl']:.3f}** (window {test['window']}, stride {test['stride']}, {test['scored_tokens']:,} tokens scored)

Expert load per MoE layer, each token routed once (shares relative to the uniform 1/{c['num_experts']};
starved = below half of uniform):

| layer | CV | entropy | Gini | min share | max share | starved |
|---|---|---|---|---|---|---|
{rows}

On another Python version the `stdlib` splits hold other text (see the sha256), so the figures differ a little.
"""


if __name__ == "__main__":
    main()
