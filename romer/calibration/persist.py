"""Save a calibrated model as a Hugging Face folder, and re-apply a calibration record.

The folder holds the clean weights with the replacements written in (`save_pretrained`), the
tokenizer, and `romer_calibration.json`: method, parameters, which slot took which expert, the
router transforms, the tensors kept digital, and the chip (seed, noise config) it was fitted on.
`romer.load_model(folder)` loads the weights (replacements included); `romer.load_calibration(model,
folder)` re-installs the router transforms and norm gains and returns the calibration, which
`apply_noise_(model, config, seed, calibration=...)` takes: programming the loaded model on the same
chip seed then gives the calibrated model bit for bit (weights mode: per-forward read and ADC noise
draw fresh values on every call).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from romer.calibration.replacement import Replacement
from romer.calibration.router import LayerTransform
from romer.calibration.state import Calibration
from romer.calibration.config import calibration_config
from romer.calibration.pipeline import carry
from romer.errors import RomerError
from romer.noise.chip import ChipHandle
from romer.noise.layout import ChipLayout, parse_digital_key

RECORD = "romer_calibration.json"
DIGITAL = "romer_retune.safetensors"  # a re-tuned chip's digital parameters: corrections and norm gains
FORMAT = 1


def save_calibrated(model: nn.Module, tokenizer, calibration: Calibration, directory: str | Path,
                    force: bool = False) -> Path:
    """Write the folder atomically (a temporary sibling renamed into place); never over a source checkpoint."""
    target = Path(directory).expanduser().resolve()
    source = Path(str(getattr(model, "name_or_path", ""))).expanduser().resolve()
    if target == source:
        raise RomerError(f"{target} is the checkpoint the model was loaded from; save the calibration elsewhere")
    if target.exists() and any(target.iterdir()) and not force:
        raise RomerError(f"{target} exists and is not empty; choose another --save folder or pass --force")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with calibration.original_norms():  # the checkpoint keeps the clean model's norm gains
            if calibration.chip is not None and not calibration.chip.restored:
                with calibration.chip.suspended():  # clean weights, replacements included
                    _save_weights(model, staging)
            else:
                _save_weights(model, staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        record = {"format": FORMAT, **calibration.as_dict(), "weights_include_replacements": True}
        if calibration.corrections or calibration.norms:
            save_file(digital_tensors(calibration), str(staging / DIGITAL))
        (staging / RECORD).write_text(json.dumps(record, indent=1))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


SHARD_SIZE = "2GB"


def _save_weights(model: nn.Module, folder: Path) -> None:
    """The weights as the model holds them (transformers' fused expert layout, which it loads back as it is), in
    shards of SHARD_SIZE: writing the checkpoint's original per-expert layout makes transformers copy the fused
    tensors first (+0.5 to 0.9 × the weights measured at one OLMoE-1B-7B layer; at sixteen the save was killed out
    of memory on a 24 GiB machine), and one 50 GB shard holds every contiguous copy at once."""
    model.save_pretrained(folder, save_original_format=False, max_shard_size=SHARD_SIZE)


def digital_tensors(calibration: Calibration) -> dict[str, torch.Tensor]:
    """The re-tuned digital parameters, by name: `correction/<tensor>/<part>` and `norm/<parameter>`."""
    tensors = {f"correction/{name}/{part}": value.detach().cpu().contiguous()
               for name, correction in calibration.corrections.items()
               for part, value in correction.named_parameters()}
    tensors |= {f"norm/{name}": param.detach().cpu().contiguous() for name, (param, _) in calibration.norms.items()}
    return tensors


def _install_digital(calibration: Calibration, record: dict, folder: Path) -> None:
    """Re-install a re-tuned chip's corrections (on its chip now, or when the model is next put on one) and
    norm gains, from the record and the tensors beside it."""
    from romer.calibration.norms import norm_gains
    from romer.noise.digital import ColumnCorrection

    path = folder / DIGITAL
    if not record.get("corrections") and not record.get("norms"):
        return
    if not path.is_file():
        raise RomerError(f"{folder} has a re-tuned calibration but no {DIGITAL}; save it again with romer calibrate")
    tensors = load_file(str(path))
    device = next(calibration.model.parameters()).device
    for name, shape in record.get("corrections", {}).items():
        correction = ColumnCorrection(shape["out"], shape["in"], shape["slots"], columns=shape["columns"],
                                      offsets=shape.get("offsets", shape["columns"]),
                                      per_matrix=shape.get("per_matrix", False),
                                      rank=shape["rank"], device=device)
        correction.load_state_dict({part: tensors[f"correction/{name}/{part}"] for part, _ in
                                    correction.named_parameters()})
        correction.requires_grad_(False)
        if calibration.chip is not None:
            calibration.attach_correction(name, correction)
        else:
            calibration.pending_correction(name, correction)
    gains = norm_gains(calibration.model)
    for name in record.get("norms", []):
        calibration.retune_norm(name, gains[name])
        with torch.no_grad():
            gains[name].copy_(tensors[f"norm/{name}"])


def read_record(folder: Path) -> dict | None:
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise RomerError(f"{path} is not valid JSON; restore it or delete it to load the plain model") from None
    if record.get("format") != FORMAT:
        raise RomerError(f"{path} has format {record.get('format')!r}; this romer reads format {FORMAT}")
    return record


def apply_record(model: nn.Module, record: dict, chip: ChipHandle | None = None,
                 with_replacements: bool = True, folder: Path | None = None) -> Calibration:
    """Install a recorded calibration: its replacements (unless the weights hold them already), its router
    transforms, and, on a chip, its digital tensors. Statistics are not re-measured."""
    calibration = Calibration(model, calibration_config(**record["config"]), chip)
    if with_replacements:
        for replacement in record["replacements"]:
            calibration.replace(Replacement(**replacement))
    else:
        calibration.replacements = [Replacement(**r) for r in record["replacements"]]
    for layer, fields in record["router"].items():
        loaded = LayerTransform.from_dict(fields)
        transform = calibration.transform(int(layer))
        transform.__dict__.update(loaded.__dict__)
    if chip is not None:
        for key in record["digital"]:
            calibration.make_digital(*parse_digital_key(key))
        for key in record.get("decomposed", []):
            name, slot = parse_digital_key(key)
            calibration.decompose(name, slot=slot)
        for name, fraction in record.get("outliers", {}).items():
            calibration.split_outliers(name, fraction)
    else:
        calibration.placed = ChipLayout.from_dict(record)  # adopted when the model is put on a chip
    calibration.report = record.get("report", {})
    if folder is not None:
        _install_digital(calibration, record, folder)
    carry(model, calibration)
    return calibration


def load_calibration(model: nn.Module, folder: str | Path) -> Calibration | None:
    """The calibration saved in `folder` (by `romer calibrate --save`) installed on `model`, loaded from that folder
    with `romer.load_model`: its router transforms and norm gains now, its digital tensors and corrections when the
    model is put on a chip with `apply_noise_(..., calibration=...)`. None when the folder holds no calibration."""
    folder = Path(folder).expanduser()
    record = read_record(folder)
    if record is None:
        return None
    return apply_record(model, record, with_replacements=False, folder=folder)
