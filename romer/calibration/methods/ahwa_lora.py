"""`ahwa-lora`: AHWA-LoRA as published (Li, Ferro, Lammie et al., arXiv 2411.17367; the authors' code:
github.com/chenlicodebank/lora_on_analog_hardware, `lora_training/run_qa.py` and `script_train.sh`).

The analog weights stay as programmed; a digital LoRA adapter on every linear layer on the chip (rank 8, α = 32,
dropout 0.1 on its input, A initialised as PEFT does, B at zero) and a learned per-column scale of each analog
output are trained once, under noise drawn afresh at every step, on the task's own loss (here: next-token
cross-entropy of the training text). The schedule is the authors' (`lora_schedule=authors`, as `run_qa.py` and
`script_train_test.sh` run it): Adam at lr 2e-4 with no weight decay (their AnalogAdam is built without the script's
`--weight_decay`), a fixed number of epochs (15) with the rate decaying linearly to 0 (the Hugging Face Trainer's
default schedule, warm-up 0), gradients clipped to norm 1.0 (the Trainer's default), the final weights kept. The
training text is `lora_train_data` (for romer-tiny, `stdlib:train`, the text it was trained on, as the authors train
on their task's training set) or, when empty, the calibration fit tokens. `lora_schedule=early-stop` is romer's
former variant: AdamW at a constant rate, stopping once the loss on held-out calibration tokens, averaged over
`lora_check_chips` fixed chip draws, has not improved for `lora_patience` checks, the best check kept. The adapters
are then deployed unchanged on every chip: nothing is measured on the chip being calibrated.

One difference from the authors' code helps this baseline: romer trains the per-column output scale, which their
code leaves frozen (`requires_grad=False` on every AnalogLinear parameter).

    y = (W_chip x) ⊙ s + (α / r) · B A dropout(x)        (s: one digital scale per output column)

Which noise (`lora_train_noise`): `chip`, a fresh draw of the chip's own configuration every step (the default:
romer can draw the very chip model the adapters will meet, which the authors approximated), or a preset such as
`ahwa-injection`, the authors' injected noise. The training chips' seeds (from TRAIN_SEED_BASE) and the check chips'
(from CHECK_SEED_BASE) are never the chips a campaign evaluates.

One training per (model, training noise, options, calibration tokens): kept in memory and on disk (`lora_cache`),
written atomically, so every later chip and every later run only installs it. Its digital share is the adapters and
the scales (`ColumnCorrection.stored_parameters`). `ahwa-lora-retune` then runs retune's end-to-end fit on each chip
for `lora_chip_steps` steps from the deployed adapters, on the same parameters (the same share).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from romer.atomic import write_atomic, write_text_atomic
from romer.calibration.methods.retune import fit_end_to_end, fit_loss, holdout_kl, matrix_shape
from romer.calibration.registry import Method, register_method
from romer.calibration.step import Step, register_step
from romer.calibration.trainable import training_only
from romer.errors import RomerError
from romer.data import load_corpus
from romer.evaluation.perplexity import sequence_perplexity, tokenize_stream
from romer.models import load_tokenizer
from romer.noise.config import NoiseConfig, parse_noise_spec
from romer.noise.digital import ColumnCorrection
from romer.progress import progress_bar

TRAIN_SEED_BASE = 2_000_000  # training step k draws chip TRAIN_SEED_BASE + k
CHECK_SEED_BASE = 3_000_000  # the held-out loss is read on chips CHECK_SEED_BASE + i
OPTIONS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_lr", "lora_weight_decay", "lora_schedule", "lora_epochs",
           "lora_clip", "lora_max_steps", "lora_eval_every", "lora_patience", "lora_check_chips", "lora_train_data",
           "lora_train_noise", "lora_loss", "lora_cache")


class LoraCorrection(ColumnCorrection):
    """One layer's adapter while it trains: ColumnCorrection's per-column gain (the learned output scale) and its
    low-rank pair as LoRA's A (`down`) and B (`up`), with LoRA's α / r scaling and input dropout."""

    def __init__(self, out_dim: int, in_dim: int, slots: int | None, rank: int, alpha: float, dropout: float,
                 generator: torch.Generator, device) -> None:
        super().__init__(out_dim, in_dim, slots, columns=True, offsets=False, rank=rank, device=device)
        bound = 1 / math.sqrt(in_dim)  # PEFT: kaiming_uniform_(a=√5) on A, i.e. U(−1/√in, 1/√in)
        with torch.no_grad():
            self.down.copy_(torch.rand(self.down.shape, generator=generator) * 2 * bound - bound)
        self.scaling, self.dropout, self.generator = alpha / rank, dropout, generator

    def forward(self, y: torch.Tensor, x: torch.Tensor, x_max, slot: int | None = None) -> torch.Tensor:
        pick = (lambda t: t) if slot is None else (lambda t: t[slot])
        y = y * (1 + pick(self.gain)).to(y.dtype)
        if self.training and self.dropout > 0:  # a seeded mask: the same training gives the same bits
            keep = torch.rand(x.shape, generator=self.generator, device=self.generator.device) >= self.dropout
            x = x * keep.to(x.device, x.dtype) / (1 - self.dropout)
        return y + (x @ pick(self.down).t().to(x.dtype)) @ pick(self.up).t().to(x.dtype) * self.scaling

    def deployed(self) -> ColumnCorrection:
        """The same function at inference, as a plain correction (α / r folded into B; no dropout)."""
        plain = ColumnCorrection(self.out_dim, self.in_dim, self.slots, columns=True, offsets=False, rank=self.rank,
                                 device=self.gain.device)
        plain.load_state_dict({"gain": self.gain, "down": self.down, "up": self.up * self.scaling})
        return plain.requires_grad_(False)


@dataclass
class Trained:
    """One training: each tensor's deployed correction state, and the record of how it was trained."""

    corrections: dict[str, tuple[tuple, dict[str, torch.Tensor]]]  # name → ((slots, out, in, rank), state)
    report: dict


_TRAINED: "WeakKeyDictionary[nn.Module, dict[str, Trained]]" = WeakKeyDictionary()


def training_noise(context) -> NoiseConfig:
    spec = context.config.lora_train_noise
    return context.chip.config if spec == "chip" else parse_noise_spec(spec)


_FINGERPRINTS: "WeakKeyDictionary[nn.Module, str]" = WeakKeyDictionary()


def model_fingerprint(model: nn.Module, chip) -> str:
    """What identifies the model the adapters belong to, cheaply and wherever it was loaded from: its configuration,
    every on-chip tensor's name, shape and a strided sample of its clean values; read once per model object (a clean
    value may come from a disk backup), then remembered for every later chip."""
    if model not in _FINGERPRINTS:
        _FINGERPRINTS[model] = _fingerprint(model, chip)
    return _FINGERPRINTS[model]


def _fingerprint(model: nn.Module, chip) -> str:
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    fields = {k: v for k, v in (config.to_dict() if hasattr(config, "to_dict") else {}).items() if k != "_name_or_path"}
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name in sorted(chip.on_chip_names()):
        value = chip.clean_value(name).detach().flatten()[::1009].float().cpu()
        digest.update(f"{name}{tuple(chip.shape(name))}".encode() + value.numpy().tobytes())
    return digest.hexdigest()


_TRAIN_TEXT: dict[tuple, torch.Tensor] = {}
MODEL_TEXT = "model"  # the text the model says it was trained on (its folder's training.json)


def shipped_training_text(folder: Path) -> str:
    """`name:split` of the training text a model folder declares (romer-tiny: stdlib:train)."""
    record = folder / "training.json"
    data = json.loads(record.read_text()).get("train_data", {}) if record.is_file() else {}
    if not data.get("name"):
        raise RomerError(f"lora_train_data=model: {folder} does not say what text it was trained on (no training.json "
                         "with train_data); name a corpus with its split or a file")
    return f"{data['name']}:{data['split']}" if data.get("split") else data["name"]


@functools.lru_cache(maxsize=4)
def training_corpus(spec: str, folder: Path):
    """The corpus `lora_train_data` names: `model`, `name:split`, a name (its default split) or a file; read once per
    process (the campaign's check against the evaluation text and the training both ask for it)."""
    if spec == MODEL_TEXT:
        spec = shipped_training_text(folder)
    name, _, split = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    return load_corpus(name, split or None)


def training_sequences(context) -> torch.Tensor:
    """[sequences, window] of the text the adapters train on: `lora_train_data` when named (read and tokenized once
    per process), else the calibration fit tokens."""
    spec = context.config.lora_train_data
    if not spec:
        return context.tokens.fit
    window = context.tokens.holdout.shape[-1] if context.tokens.holdout.numel() else context.tokens.fit.shape[-1]
    folder = str(getattr(context.model, "name_or_path", ""))
    key = (folder, spec, window)
    if key not in _TRAIN_TEXT:
        ids = tokenize_stream(load_tokenizer(Path(folder)), training_corpus(spec, Path(folder)).text)
        usable = ids.numel() // window
        if usable < 1:
            raise RomerError(f"lora_train_data '{spec}' has {ids.numel()} tokens, fewer than one sequence of {window}")
        _TRAIN_TEXT[key] = ids[: usable * window].view(usable, window)
    return _TRAIN_TEXT[key]


def training_key(context) -> str:
    options = {name: getattr(context.config, name) for name in OPTIONS if name not in ("lora_cache", "lora_train_noise")}
    options["batch_size"] = context.config.batch_size
    tokens = hashlib.sha256(training_sequences(context).numpy().tobytes() + context.tokens.holdout.numpy().tobytes())
    key = [model_fingerprint(context.model, context.chip), training_noise(context).model_dump(mode="json"), options,
           tokens.hexdigest()]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def cache_folder(config) -> Path | None:
    if config.lora_cache == "off":
        return None
    if config.lora_cache:
        return Path(config.lora_cache).expanduser()
    root = os.environ.get("ROMER_CACHE") or Path.home() / ".cache" / "romer"
    return Path(root) / "ahwa-lora"


def load_trained(folder: Path | None, key: str) -> Trained | None:
    if folder is None or not (folder / f"{key}.json").is_file() or not (folder / f"{key}.safetensors").is_file():
        return None
    record = json.loads((folder / f"{key}.json").read_text())
    tensors = load_file(str(folder / f"{key}.safetensors"))
    corrections = {name: (tuple(shape), {part: tensors[f"{name}/{part}"] for part in ("gain", "down", "up")})
                   for name, shape in record["shapes"].items()}
    return Trained(corrections, record["report"])


def save_trained(folder: Path | None, key: str, trained: Trained) -> None:
    """Both files written atomically, the tensors first: a reader finds the record only once its tensors are whole."""
    if folder is None:
        return
    tensors = {f"{name}/{part}": value.cpu().contiguous() for name, (_, state) in trained.corrections.items()
               for part, value in state.items()}
    record = {"shapes": {name: list(shape) for name, (shape, _) in trained.corrections.items()},
              "report": trained.report}
    write_atomic(folder / f"{key}.safetensors", lambda temporary: save_file(tensors, str(temporary)))
    write_text_atomic(folder / f"{key}.json", json.dumps(record, indent=1))


def task_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy of the text itself (the authors train on their task's labels)."""
    device = next(model.parameters()).device
    batch = batch.to(device)
    logits = model(input_ids=batch).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def train(context) -> Trained:
    chip, config, model, tokens = context.chip, context.config, context.model, context.tokens
    started = time.perf_counter()
    holdout = tokens.require_holdout("ahwa-lora")
    noise = training_noise(context)
    distill = config.lora_loss == "distill"
    teacher = context.teacher() if distill else None
    generator = torch.Generator().manual_seed(0)  # the adapters' initial A, then every dropout mask
    adapters = {}
    for name in sorted(chip.on_chip_names()):
        slots, out_dim, in_dim = matrix_shape(chip, name)
        module, attribute = chip.module_of(name)
        adapters[name] = LoraCorrection(out_dim, in_dim, slots, config.lora_rank, config.lora_alpha,
                                        config.lora_dropout, generator, getattr(module, attribute).device)
    params = [p for adapter in adapters.values() for p in adapter.parameters()]
    text = training_sequences(context)
    if distill and text is not tokens.fit:
        raise RomerError("lora_loss=distill reads the clean twin on the calibration fit tokens; leave lora_train_data "
                         "empty or use lora_loss=task")
    batch, batches = config.batch_size, math.ceil(len(text) / config.batch_size)
    authors = config.lora_schedule == "authors"
    if authors:  # run_qa.py: AnalogAdam without weight decay, the Trainer's linear decay to 0 and its clip of 1.0
        total = max(1, round(config.lora_epochs * batches))
        if total > config.lora_max_steps:
            raise RomerError(f"ahwa-lora's {config.lora_epochs:g} epochs over {len(text)} sequences are {total} steps, "
                             f"more than lora_max_steps={config.lora_max_steps}; raise lora_max_steps or lower "
                             "lora_epochs")
        optimizer = torch.optim.Adam(params, lr=config.lora_lr, weight_decay=config.lora_weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: max(0.0, (total - done) / total))
    else:
        total = config.lora_max_steps
        optimizer = torch.optim.AdamW(params, lr=config.lora_lr, weight_decay=config.lora_weight_decay)
        schedule = None
    order = torch.Generator().manual_seed(0)
    permutation: list[int] = []

    @contextmanager
    def on_chip(seed: int):
        with chip.other_instance(seed, noise) as other:
            for name, adapter in adapters.items():
                other.attach_correction(name, adapter)
            yield

    @torch.no_grad()
    def check() -> float:
        for adapter in adapters.values():
            adapter.eval()
        losses = []
        for i in range(config.lora_check_chips):
            with on_chip(CHECK_SEED_BASE + i):
                losses.append(holdout_kl(model, holdout, teacher.holdout, batch) if distill
                              else math.log(sequence_perplexity(model, holdout, batch)))
        for adapter in adapters.values():
            adapter.train()
        return sum(losses) / len(losses)

    history, fit_losses = [], []
    with training_only(model, params), \
            progress_bar("ahwa-lora: training the adapters (once)", total) as advance:
        best = (check(), [p.detach().clone() for p in params], 0)
        history.append({"step": 0, "holdout": best[0]})
        waited, step = 0, 0
        while step < total and (authors or waited < config.lora_patience):
            step += 1
            if not permutation:
                permutation = torch.randperm(batches, generator=order).tolist()
            index = permutation.pop()
            sequences = text[index * batch:(index + 1) * batch]
            with on_chip(TRAIN_SEED_BASE + step):
                loss = (fit_loss(model, sequences, teacher.fit[index]) if distill
                        else task_loss(model, sequences))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.lora_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.lora_clip)
                optimizer.step()
                if schedule is not None:
                    schedule.step()
            fit_losses.append(float(loss.detach()))
            advance(1)
            if step % config.lora_eval_every == 0 or (authors and step == total):
                held = check()
                history.append({"step": step, "holdout": held})
                if held < best[0]:
                    best, waited = (held, [p.detach().clone() for p in params], step), 0
                else:
                    waited += 1
    if not authors:  # early-stop keeps its best check; the authors keep their final weights
        with torch.no_grad():
            for param, value in zip(params, best[1]):
                param.copy_(value)
    for adapter in adapters.values():
        adapter.eval()
    stopped = ("the authors' schedule: fixed epochs, final weights kept" if authors
               else "held-out loss stopped improving" if waited >= config.lora_patience else "lora_max_steps reached")
    report = {"training_noise": noise.name, "train_seed_base": TRAIN_SEED_BASE, "check_seeds":
              [CHECK_SEED_BASE + i for i in range(config.lora_check_chips)], "loss": config.lora_loss,
              "schedule": config.lora_schedule, "steps": step, "best_step": step if authors else best[2],
              "stopped": stopped, "holdout_by_check": history, "train_sequences": len(text),
              "train_tokens": int(text.numel()), "train_data": config.lora_train_data or "calibration fit tokens",
              "epochs": step / batches, "fit_loss_first": fit_losses[:batches], "fit_loss_last": fit_losses[-batches:],
              "parameters": sum(a.stored_parameters for a in adapters.values()),
              "optimizer": type(optimizer).__name__, "final_lr": optimizer.param_groups[0]["lr"],
              "train_seconds": time.perf_counter() - started}
    corrections = {}
    for name, adapter in adapters.items():
        plain = adapter.deployed()
        corrections[name] = ((adapter.slots, adapter.out_dim, adapter.in_dim, adapter.rank),
                             {k: v.detach().clone() for k, v in plain.state_dict().items()})
    return Trained(corrections, report)


def refuse_training_seed(context) -> None:
    seed, config = context.chip.seed, context.config
    if training_noise(context) != context.chip.config:
        return
    if seed in range(TRAIN_SEED_BASE, TRAIN_SEED_BASE + config.lora_max_steps + 1) or \
            seed in range(CHECK_SEED_BASE, CHECK_SEED_BASE + config.lora_check_chips):
        raise RomerError(f"chip seed {seed} is one ahwa-lora trains or checks on (from {TRAIN_SEED_BASE} and "
                         f"{CHECK_SEED_BASE}); evaluate it on chips it never saw (a smaller seed)")


class AhwaLora(Step):
    """Train once (or find the training in memory or on disk), then install the adapters on this chip."""

    name = "ahwa-lora"
    options = OPTIONS

    def enabled(self, config, chip) -> bool:
        return chip is not None  # on the clean model there is no chip to put adapters on

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip)

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"teacher"}) if config.lora_loss == "distill" else frozenset()

    @torch.no_grad()
    def run(self, context) -> None:
        refuse_training_seed(context)
        key = training_key(context)
        folder = cache_folder(context.config)
        trained_here = _TRAINED.setdefault(context.model, {})
        source = "memory"
        if key not in trained_here:
            found = load_trained(folder, key)
            source = "disk"
            if found is None:
                found, source = train(context), "trained"
                save_trained(folder, key, found)
            trained_here[key] = found
        trained, calibration, chip = trained_here[key], context.calibration, context.chip
        for name, ((slots, out_dim, in_dim, rank), state) in trained.corrections.items():
            module, attribute = chip.module_of(name)
            correction = ColumnCorrection(out_dim, in_dim, slots, columns=True, offsets=False, rank=rank,
                                          device=getattr(module, attribute).device)
            correction.load_state_dict(state)
            calibration.attach_correction(name, correction.requires_grad_(False))
        calibration.report["ahwa-lora"] = {**trained.report, "key": key, "source": source,
                                           "cache": str(folder) if folder else None}


class AhwaLoraRetune(Step):
    """retune's end-to-end fit on this chip, of the adapters and scales ahwa-lora installed (nothing added)."""

    name = "ahwa-lora-retune"
    options = ("lora_chip_steps", "retune_lr", "retune_eval_every", "retune_hidden_weight")

    def enabled(self, config, chip) -> bool:
        return chip is not None

    def needs_holdout(self, config, chip) -> bool:
        return self.enabled(config, chip)

    def clean_needs(self, config, chip) -> frozenset[str]:
        return frozenset({"teacher", "hidden"})

    def run(self, context) -> None:
        started = time.perf_counter()
        model, config, tokens = context.model, context.config, context.tokens
        teacher = context.teacher("hidden")
        params = [p for _, correction in context.calibration.correction_items() for p in correction.parameters()]
        with training_only(model, params):
            history = fit_end_to_end(model, params, config.lora_chip_steps, tokens.fit, teacher.fit, tokens.holdout,
                                     teacher.holdout, config)
        context.calibration.report["ahwa-lora-retune"] = {**history, "seconds": time.perf_counter() - started}


register_step(AhwaLora())
register_step(AhwaLoraRetune())
register_method(Method("ahwa-lora", "published (Li, Ferro, Lammie et al. 2024, AHWA-LoRA): LoRA r=8, α=32 on every "
                                    "on-chip linear layer and a learned per-column output scale, trained once under "
                                    "fresh noise every step, deployed unchanged on every chip",
                       steps=("ahwa-lora",)))
register_method(Method("ahwa-lora-retune", "ours: ahwa-lora's adapters, then retune's end-to-end fit of them on each "
                                           "chip (lora_chip_steps steps)",
                       steps=("ahwa-lora", "ahwa-lora-retune")))
