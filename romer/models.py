"""Load a mixture-of-experts causal LM and its tokenizer: embedded, local folder or hub id.

    model, tokenizer = romer.load_model("romer-tiny")
    model, tokenizer = romer.load_model("/data/OLMoE-1B-7B", device="cuda", dtype="bfloat16")
    model, tokenizer = romer.load_model("allenai/OLMoE-1B-7B-0924")   # downloads once

Every source ends as a local folder that transformers loads, so the embedded model and a
real checkpoint take the same path. Code shipped with a checkpoint, and pickle weights
(which can run code), load only with `trust_remote_code=True`, never by default.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from romer.errors import RomerError
from romer.moe.adapter import require_moe
from romer.resident import keep_heap_small, paging_out_checkpoints, release_checkpoint_pages

ZOO = Path(__file__).parent / "zoo"
_EMBEDDED: dict[str, Path] = {}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
_REMOTE_FILES = ["*.py", "*.bin"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def register_embedded(name: str, folder: Path) -> None:
    _EMBEDDED[name] = folder


def embedded_models() -> list[str]:
    return sorted(_EMBEDDED)


register_embedded("romer-tiny", ZOO / "romer-tiny")


def is_hub_id(spec: str) -> bool:
    """`spec` names a Hugging Face Hub repository: not embedded, not an existing path, shaped owner/name."""
    return (spec not in _EMBEDDED and not Path(spec).expanduser().exists() and bool(_HUB_ID.match(spec))
            and not spec.startswith("."))


def resolve_model_path(spec: str, trust_remote_code: bool = False) -> Path:
    """The local folder behind `spec`: an embedded name, an existing folder, or a hub id (downloaded)."""
    if spec in _EMBEDDED:
        return _EMBEDDED[spec]
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if is_hub_id(spec):
        return _download(spec, trust_remote_code)
    raise RomerError(f"model path {spec} does not exist; pass {', '.join(embedded_models())}, "
                     "a local Hugging Face folder, or a hub id such as allenai/OLMoE-1B-7B-0924")


def _download(repo_id: str, trust_remote_code: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    patterns = _HUB_FILES + (_REMOTE_FILES if trust_remote_code else [])
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise RomerError(f"no model '{repo_id}' on the Hugging Face Hub (or it is private); check the id") from None
    except Exception as error:  # offline, DNS, proxy, timeouts: the same advice for each
        raise RomerError(f"could not download {repo_id} from the Hugging Face Hub ({type(error).__name__}); "
                         "offline, download the folder elsewhere and pass its path with --model") from None


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise RomerError(f"unknown device '{device}'; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RomerError("CUDA is not available on this machine; use --device cpu")
    return resolved


def _device_map(device: str, target: torch.device) -> str | None:
    """`auto` on a GPU machine spreads a model larger than one device over all of them (accelerate)."""
    if target.type != "cuda":
        return None
    return "auto" if device == "auto" else str(target)


def _check_weights(folder: Path, trust_remote_code: bool) -> None:
    if any(folder.glob("*.safetensors")):
        return
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        if not trust_remote_code:
            raise RomerError(f"{folder} has only pickle weights, which can run code when loaded; "
                             "convert them to safetensors, or pass --trust-remote-code if you trust the source")
        return
    raise RomerError(f"{folder} holds no model weights (*.safetensors); pass a complete Hugging Face folder")


def load_config(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if folder.is_file():
        raise RomerError(f"{folder} is a file, not a model folder; pass the folder that holds config.json")
    if not (folder / "config.json").is_file():
        raise RomerError(f"{folder} is not a Hugging Face model folder (no config.json); "
                         "pass a folder written by save_pretrained, romer-tiny, or a hub id")
    try:
        json.loads((folder / "config.json").read_text())
    except (ValueError, OSError):
        raise RomerError(f"{folder}/config.json is not valid JSON; restore the file from the model's source") from None
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as error:
        if "trust_remote_code" in str(error):
            raise RomerError(f"{folder} ships its own model code; rerun with --trust-remote-code "
                             "if you have read it and trust it") from None
        raise RomerError(f"cannot read {folder}/config.json: {str(error).splitlines()[0]}") from None
    auto_map = getattr(config, "auto_map", None) or {}
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and "AutoModelForCausalLM" not in auto_map:
        raise RomerError(f"{folder} holds a '{config.model_type}' model, which is not a causal language model; "
                         "romer needs a causal LM with mixture-of-experts layers")
    return config


def load_model(spec: str = "romer-tiny", *, device: str = "cpu", dtype: str = "float32",
               trust_remote_code: bool = False) -> tuple[nn.Module, object]:
    """Model (in eval mode, on `device`) and tokenizer. The folder loaded is `model.name_or_path`."""
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise RomerError(f"unknown dtype '{dtype}'; use one of {', '.join(DTYPES)}")
    target = _resolve_device(device)
    folder = resolve_model_path(spec, trust_remote_code)
    config = load_config(folder, trust_remote_code)
    _check_weights(folder, trust_remote_code)
    tokenizer = load_tokenizer(folder, trust_remote_code)  # before the weights: a broken folder fails fast
    if target.type == "cpu":
        keep_heap_small()  # before the weights: large blocks freed from here on go back to the system
    try:
        with paging_out_checkpoints() if target.type == "cpu" else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(
                folder, config=config, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                use_safetensors=None if trust_remote_code else True,
                device_map=_device_map(device, target))
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise RomerError(f"the weights of {folder} cannot be read ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:80] if str(error) else 'corrupt'}); the file is truncated or "
                         "corrupt: download or save the model again") from None
    if target.type != "cuda":  # on CUDA, device_map has placed the weights already
        model.to(target)
        release_checkpoint_pages(model)  # the file pages the fused copies were read from
    model.eval()
    require_moe(model, spec)
    return model, tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json",
                   "spiece.model", "tiktoken.model")


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES) and not any(folder.glob("*.tiktoken")):
        raise RomerError(f"{folder} has no tokenizer (tokenizer.json, tokenizer.model, ...); save the tokenizer "
                         "beside the weights (tokenizer.save_pretrained)")
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as error:  # tokenizers raises plain Exceptions on a corrupt file
        raise RomerError(f"the tokenizer of {folder} cannot be read ({type(error).__name__}); restore its tokenizer "
                         "files from the model's source") from None
