"""`romer estimate`: the memory a run needs, from the model's config alone (no weights are read).

The model is built on PyTorch's meta device, so parameter counts are exact for any architecture
transformers can build. What a noisy run holds, on the device that runs the model:
  weights        every parameter, in the run's dtype;
  programming    the scratch of programming the largest on-chip tensor (one expert slot of a fused
                 tensor): its float32 target, noisy result and random draws, ≈ 4 float32 copies, for
                 each slot programmed at once (on a CPU, `slot_threads`);
  telemetry      the router-logit sample routing statistics keep (bounded: MAX_LOGIT_ROWS rows);
  per sequence   the float32 logits and the cross-entropy's copy (window × vocab), the dtype logits,
                 hidden and expert activations, and eager attention scores (an upper bound: SDPA
                 kernels keep less).
The clean copy that `restore()` needs never takes device memory: host memory when it fits, else
disk (`romer.noise.chip.choose_backup`).

`retune` fits digital parameters by backpropagation, so per sequence it also keeps what the backward
pass needs: every decoder layer's activations (or, with gradient checkpointing, only each layer's
input and one layer's activations at a time), the float32 logits, their log-softmax and its gradient,
and the clean twin's log-probabilities and decoder-layer outputs of that batch (float16); before the
fit, the least-squares start holds the moments of every on-chip linear layer at once (float32
in² + 2·in·out + in each). On the host, the teacher for every calibration token (`retune_host_bytes`).

The block-wise fit (`retune_engine=blockwise`) runs one decoder layer at a time on cached inputs: per
sequence it keeps one layer's activations, that layer's float32 input and output and the float16 clean
target, and the least-squares start holds the moments of one layer's linear layers at a time. On the
host it keeps the float32 inputs of the current layer (and the next, while they are computed) and
every decoder layer's clean output for every calibration token, float16. Estimates, not measurements:
`bench/scale.py` measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from romer.calibration.blocks import decoder_layers
from romer.moe.telemetry import MAX_LOGIT_ROWS
from romer.errors import RomerError
from romer.evaluation.perplexity import MAX_DEFAULT_WINDOW
from romer.models import DTYPES, is_hub_id, load_config, resolve_model_path
from romer.noise.chip import SMALL_BACKUP_BYTES
from romer.noise.config import DEFAULT_ROLES
from romer.noise.programming import slot_threads
from romer.noise.roles import on_chip_tensors

FLOAT32 = 4
PROGRAMMING_COPIES = 4
MAX_AUTO_BATCH = 64
HEADROOM = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    model: str
    dtype: str
    window: int
    parameters: int
    on_chip_parameters: int
    weights_bytes: int
    programming_bytes: int
    telemetry_bytes: int
    per_sequence_bytes: int
    backup: str          # where the clean copy lives: host memory or disk
    backup_bytes: int
    retune_per_sequence_bytes: int = 0              # all activations kept for the backward pass
    retune_checkpointed_per_sequence_bytes: int = 0  # with gradient checkpointing per decoder layer
    retune_start_bytes: int = 0                      # the least-squares start's moments, all linear layers
    blockwise_per_sequence_bytes: int = 0            # block-wise: one layer's activations, its input, output, target
    blockwise_start_bytes: int = 0                   # block-wise: the moments of the largest layer's linear layers
    hidden_bytes_per_token: int = 0                  # one token's hidden state, float32
    vocab: int = 0
    hidden_states_bytes_per_token: int = 0           # the teacher's decoder-layer outputs of one token, float16
    layers: int = 0
    layer_activation_bytes: int = 0                  # one decoder layer's activations of one sequence

    def device_bytes(self, batch_size: int) -> int:
        return self.weights_bytes + self.programming_bytes + self.telemetry_bytes + batch_size * self.per_sequence_bytes

    def retune_bytes(self, batch_size: int, checkpointing: bool = True) -> int:
        """Peak of a `retune` fit with `batch_size` sequences per step."""
        per = self.retune_checkpointed_per_sequence_bytes if checkpointing else self.retune_per_sequence_bytes
        fit = batch_size * per
        start = self.retune_start_bytes + batch_size * self.per_sequence_bytes  # inference passes with the moments
        return self.weights_bytes + self.programming_bytes + max(fit, start)

    def blockwise_retune_bytes(self, batch_size: int) -> int:
        """Peak on the device of a block-wise fit with `batch_size` sequences per step."""
        fit = batch_size * self.blockwise_per_sequence_bytes
        start = self.blockwise_start_bytes + batch_size * self.blockwise_per_sequence_bytes
        head = self.retune_per_sequence_bytes - self.layers * self.layer_activation_bytes  # one sequence at a time
        return self.weights_bytes + self.programming_bytes + max(fit, start, head)

    def blockwise_host_bytes(self, calib_tokens: int = 32768) -> int:
        """What a block-wise fit keeps on the host: the teacher's next-token distributions, every decoder layer's
        clean output (float16) and two layers' float32 inputs, for every calibration token."""
        return (self.retune_host_bytes(calib_tokens, holdout=1.0) + calib_tokens * self.hidden_states_bytes_per_token
                + 2 * calib_tokens * self.hidden_bytes_per_token)

    def retune_host_bytes(self, calib_tokens: int = 32768, holdout: float = 0.25) -> int:
        """The teacher a `retune` fit keeps on the host for all its calibration tokens: next-token distributions (in
        full: float16 probabilities and a float32 Σ p log p per position; or each position's top k beyond
        MAX_TEACHER_BYTES: ids and float16 log-probabilities) and, for the fit tokens, every decoder layer's output."""
        from romer.calibration.teacher import teacher_top_k

        top_k = teacher_top_k(self.vocab, calib_tokens)
        distributions = calib_tokens * (self.vocab * 2 + 4 if top_k is None else top_k * (2 + 4))
        return distributions + int(calib_tokens * (1 - holdout)) * self.hidden_states_bytes_per_token

    def fit_batch_size(self, free_bytes: int) -> int:
        """The largest batch (≤ 64 windows) whose peak fits in `HEADROOM` × `free_bytes`; 0 if none does."""
        room = HEADROOM * free_bytes - self.device_bytes(0)
        return int(max(0, min(MAX_AUTO_BATCH, room // self.per_sequence_bytes)))

    def as_dict(self) -> dict:
        return asdict(self)


def moe_dimensions(model: torch.nn.Module, hidden: int) -> tuple[int, int, int]:
    """(experts, top-k, an expert's hidden width) of the model's MoE layers, read from its structure through its
    family's adapter (no config names): the most experts of any layer, its top-k, and the input width of an expert's
    last matrix (its down projection)."""
    from romer.moe.adapter import adapter_for

    layers = adapter_for(model).layers(model)
    if not layers:
        return 0, 1, hidden
    widest = max(layers, key=lambda layer: layer.num_experts)
    module, attribute, _ = adapter_for(model).expert_weights(widest, 0)[-1]
    return widest.num_experts, widest.top_k, int(getattr(module, attribute).shape[-1])


def meta_model(folder: Path, trust_remote_code: bool = False):
    """The model built on the meta device: its structure and shapes, no memory."""
    from transformers import AutoModelForCausalLM

    config = load_config(folder, trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code), config


def config_folder(spec: str, trust_remote_code: bool) -> Path:
    """An embedded model or local folder as it is; of a hub id only the config (and, trusted, its code)."""
    if not is_hub_id(spec):
        return resolve_model_path(spec, trust_remote_code)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=["config.json"] + (["*.py"] if trust_remote_code else [])))
    except Exception as error:
        raise RomerError(f"could not read {spec}/config.json from the Hugging Face Hub ({type(error).__name__}); "
                         "offline, pass a local folder") from None


def estimate_memory(spec: str, dtype: str = "float32", window: int | None = None,
                    trust_remote_code: bool = False, on_accelerator: bool = False) -> MemoryEstimate:
    if dtype not in DTYPES:
        raise RomerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    folder = config_folder(spec, trust_remote_code)
    model, config = meta_model(folder, trust_remote_code)
    element = torch.empty((), dtype=DTYPES[dtype]).element_size()
    parameters = sum(p.numel() for p in model.parameters())
    chip = on_chip_tensors(model, DEFAULT_ROLES)
    on_chip = sum(t.param.numel() for t in chip)
    largest_slot = max((t.param[0].numel() if t.param.dim() > 2 else t.param.numel() for t in chip), default=0)
    context = getattr(config, "max_position_embeddings", None) or MAX_DEFAULT_WINDOW
    window = window or min(int(context), MAX_DEFAULT_WINDOW)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    vocab = int(text.vocab_size)
    heads = int(getattr(text, "num_attention_heads", 1))
    experts, top_k, intermediate = moe_dimensions(model, hidden)
    layers = len(decoder_layers(model))
    per_sequence = (window * vocab * (2 * FLOAT32 + element)           # logits: dtype, float32, log-softmax
                    + window * hidden * element * 8                    # residual, norms, q/k/v/o
                    + window * top_k * intermediate * element * 3      # expert gate/up/act
                    + heads * window * window * FLOAT32)              # eager attention scores
    logits = window * vocab * (element + 3 * FLOAT32 + 2)  # dtype, float32, log-softmax, its gradient, teacher fp16
    logits += layers * window * hidden * 2                 # the teacher's decoder-layer outputs, float16
    layer_activations = per_sequence - window * vocab * (2 * FLOAT32 + element)
    retune_all = logits + layers * layer_activations
    retune_checkpointed = logits + layers * window * hidden * element + layer_activations
    backup_bytes = on_chip * element
    linear = [t for t in chip if t.param.dim() == 2 and isinstance(t.module, torch.nn.Linear)]
    moments = {t.name: (t.param.shape[1] ** 2 + 2 * t.param.numel() + t.param.shape[1]) * FLOAT32 for t in linear}
    start_bytes = sum(moments.values())
    blocks = [name for name, _ in decoder_layers(model)]
    block_start = max((sum(b for n, b in moments.items() if n.startswith(block + ".")) for block in blocks), default=0)
    block_per_sequence = layer_activations + window * hidden * (3 * FLOAT32 + 2)  # input, output, its grad; target
    backup = "host memory" if on_accelerator or backup_bytes <= SMALL_BACKUP_BYTES else "disk"
    return MemoryEstimate(model=spec, dtype=dtype, window=window, parameters=parameters, on_chip_parameters=on_chip,
                          weights_bytes=parameters * element,
                          programming_bytes=largest_slot * FLOAT32 * PROGRAMMING_COPIES
                          * slot_threads("cuda" if on_accelerator else "cpu"),
                          telemetry_bytes=MAX_LOGIT_ROWS * max(experts, 1) * FLOAT32 * layers,
                          per_sequence_bytes=per_sequence, backup=backup, backup_bytes=backup_bytes,
                          retune_per_sequence_bytes=retune_all, retune_checkpointed_per_sequence_bytes=retune_checkpointed,
                          retune_start_bytes=start_bytes, vocab=vocab, hidden_states_bytes_per_token=layers * hidden * 2,
                          blockwise_per_sequence_bytes=block_per_sequence, blockwise_start_bytes=block_start,
                          hidden_bytes_per_token=hidden * FLOAT32, layers=layers, layer_activation_bytes=layer_activations)


def free_device_bytes(device: str) -> int:
    """Free memory on `device` now: the GPU's free memory, or the host's available memory."""
    if device.startswith("cuda") or device == "auto":
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info(torch.device(device if device != "auto" else "cuda"))
            return int(free)
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
