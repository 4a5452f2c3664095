"""Train romer-tiny, the embedded MoE model, from nothing on the `stdlib/train` split.

    python scripts/train_romer_tiny.py --out romer/zoo/romer-tiny

Two stages, both seeded: a byte-level BPE tokenizer, then a stock transformers
`OlmoeForCausalLM`. The model must be load-balanced when clean (SPEC §5), so every MoE layer
gets its own Switch-style balance loss: transformers' `load_balancing_loss_func` concatenates
all layers and balances only their sum (SPEC §7), which leaves single layers lopsided.
After training, run `scripts/write_model_card.py` to measure the model and write its card.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from romer.data import load_corpus

EOS = "<|endoftext|>"


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=EOS,
                                   model_max_length=1_000_000_000)


def balance_loss(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-Transformer balance loss of one layer: E·Σ f_i·P_i, equal to 1 when perfectly balanced."""
    probs = router_logits.float().softmax(dim=-1)
    experts = probs.shape[-1]
    chosen = probs.topk(top_k, dim=-1).indices.flatten()
    share = torch.bincount(chosen, minlength=experts).float() / chosen.numel()
    return experts * (share * probs.mean(dim=0)).sum()


def z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: keeps logits small so routing stays numerically stable."""
    return torch.logsumexp(router_logits.float(), dim=-1).square().mean()


def layer_cv(router_logits: torch.Tensor, top_k: int) -> float:
    chosen = router_logits.topk(top_k, dim=-1).indices.flatten()
    counts = torch.bincount(chosen, minlength=router_logits.shape[-1]).float()
    return (counts.std(unbiased=False) / counts.mean()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--expert-size", type=int, default=48)
    parser.add_argument("--balance-coef", type=float, default=0.05, help="per-layer balance loss weight")
    parser.add_argument("--z-coef", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    corpus = load_corpus("stdlib", "train")
    print(f"stdlib/train: {len(corpus.text):,} chars, {corpus.documents} files, sha256 {corpus.sha256[:16]}", flush=True)

    tokenizer = train_tokenizer(corpus.text, args.vocab)
    ids = torch.tensor(tokenizer(corpus.text)["input_ids"], dtype=torch.long)
    print(f"tokenizer: vocab {len(tokenizer)}, {ids.numel():,} train tokens ({time.time() - started:.0f} s)", flush=True)

    config = OlmoeConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.expert_size,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        num_experts=args.experts, num_experts_per_tok=args.top_k, max_position_embeddings=args.seq,
        tie_word_embeddings=True, router_aux_loss_coef=0.0, output_router_logits=False,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    model = OlmoeForCausalLM(config)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "norm" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / args.warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps)))))
    sampler = torch.Generator().manual_seed(args.seed)
    model.train()
    train_started = time.time()
    for step in range(args.steps):
        starts = torch.randint(0, ids.numel() - args.seq - 1, (args.batch,), generator=sampler)
        batch = torch.stack([ids[s:s + args.seq + 1] for s in starts.tolist()])
        out = model(input_ids=batch[:, :-1], output_router_logits=True)
        lm = F.cross_entropy(out.logits.flatten(0, 1), batch[:, 1:].flatten())
        balance = torch.stack([balance_loss(r, args.top_k) for r in out.router_logits]).sum()
        zl = torch.stack([z_loss(r) for r in out.router_logits]).sum()
        loss = lm + args.balance_coef * balance + args.z_coef * zl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps - 1:
            elapsed = time.time() - train_started
            cvs = " ".join(f"{layer_cv(r.detach(), args.top_k):.2f}" for r in out.router_logits)
            print(f"step {step:5d}  lm {lm.item():.3f}  balance {balance.item() / args.layers:.3f}  "
                  f"cv [{cvs}]  {elapsed / 60:.1f} min, eta {elapsed / (step + 1) * (args.steps - step - 1) / 60:.1f} min",
                  flush=True)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    record = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "seed": args.seed, "hyperparameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_data": {**corpus.describe(), "tokens": ids.numel()},
        "tokens_seen": args.steps * args.batch * args.seq,
        "wall_time_s": round(time.time() - started, 1),
        "torch": torch.__version__, "python": sys.version.split()[0],
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved to {args.out} after {record['wall_time_s'] / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
