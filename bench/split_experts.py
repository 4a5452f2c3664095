"""A 64-expert, top-8 model that computes exactly what romer-tiny computes (for the replacement study).

    python bench/split_experts.py --out runs/romer-tiny-64

Each of romer-tiny's 32 experts (intermediate size 48) becomes two experts of size 24: the first and
the second half of its intermediate units, each with its own copy of the expert's router row and
twice its down projection. With softmax routing over 64 logits, each pair shares its expert's
logit, so the pair is chosen together, each half gets half the original weight, and
half₁(x)·2·p/2 + half₂(x)·2·p/2 = expert(x)·p: clean, the two models agree to float rounding.
On a chip the halves and the two router rows draw their own noise and drift apart: the shape of
OLMoE-1B-7B (64 experts, top-8) with a trained function, not random weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from romer.models import load_model


@torch.no_grad()
def split_experts(model):
    """romer-tiny (OLMoE, fused experts, softmax without renormalisation) with every expert split in two."""
    config = model.config
    if config.model_type != "olmoe" or config.norm_topk_prob:
        raise ValueError("splitting keeps the function only for OLMoE without top-k renormalisation")
    experts, top_k, inner = config.num_experts, config.num_experts_per_tok, config.intermediate_size
    state = model.state_dict()
    split_config = config.__class__(**(config.to_dict() | {"num_experts": 2 * experts, "num_experts_per_tok": 2 * top_k,
                                                           "intermediate_size": inner // 2}))
    split = model.__class__(split_config)
    new_state = {}
    half = inner // 2
    for name, value in state.items():
        if name.endswith("mlp.gate.weight"):
            new_state[name] = value.repeat_interleave(2, dim=0)
        elif name.endswith("experts.gate_up_proj"):  # [E, 2I, H]: gate rows then up rows
            gate, up = value[:, :inner], value[:, inner:]
            parts = [torch.cat([gate[:, i * half:(i + 1) * half], up[:, i * half:(i + 1) * half]], dim=1)
                     for i in range(2)]
            new_state[name] = torch.stack(parts, dim=1).flatten(0, 1)
        elif name.endswith("experts.down_proj"):  # [E, H, I]
            parts = [2 * value[:, :, i * half:(i + 1) * half] for i in range(2)]
            new_state[name] = torch.stack(parts, dim=1).flatten(0, 1)
        else:
            new_state[name] = value
    split.load_state_dict(new_state)
    return split.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/romer-tiny-64")
    args = parser.parse_args()
    model, tokenizer = load_model("romer-tiny")
    split = split_experts(model)
    out = Path(args.out)
    split.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ids = torch.arange(1, 257).view(1, 256)
    difference = (split(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    print(f"wrote {out}: {split.config.num_experts} experts, top-{split.config.num_experts_per_tok}; "
          f"largest logit difference to romer-tiny {difference:.2e}")


if __name__ == "__main__":
    main()
