"""`romer estimate`'s time per stage: the work each stage of one chip's `outlier-retune` does, priced at rates
measured on a device.

A stage's time is rate × work, the work counted from the model's config alone:
  load      the checkpoint's bytes;
  program   the on-chip weights (every device draw is per weight);
  evaluate  tokens × the parameters each token reads (attention, the routers, top-k experts, the output head);
  outliers  the on-chip weights again (the split programs every tensor once more at a fixed attention share;
            the default search programs it once per candidate and reads the held-out text once per candidate);
  teacher   calibration tokens × the parameters each token reads (the clean twin's pass), plus the weights'
            bytes written aside and read back while the clean twin is visited;
  plan      (block-wise planner) plan tokens × Σ over layers of (its on-chip matrices + 2) × one layer's reads;
  fit       (block-wise) layers × block steps × tokens per step × one layer's reads;
  restore   the on-chip weights' bytes, read back from the clean copy.
The rates come from `bench/stages.py` on one device (`romer/scale/rates/<device>.json`, with the commit and the
depths they were fitted on); a device without measured rates gets no time lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

RATES = Path(__file__).parent / "rates"
STAGES = ("load", "program", "evaluate", "outliers", "teacher", "plan", "fit", "restore")


@dataclass(frozen=True)
class Shape:
    """What the stages' work is counted from."""

    layers: int
    weights_bytes: int
    on_chip_parameters: int
    on_chip_bytes: int
    layer_reads: int      # parameters one token reads in one decoder layer
    head_reads: int       # parameters one token reads outside the decoder layers (the output head)
    matrices_per_layer: int  # on-chip matrices of one layer (the planner's ranking)


@dataclass(frozen=True)
class Workload:
    eval_tokens: int = 2048
    calib_tokens: int = 8192
    plan_tokens: int = 2048
    block_steps: int = 20
    step_tokens: int = 4 * 512


def work(shape: Shape, load: Workload) -> dict[str, float]:
    token_reads = shape.layers * shape.layer_reads + shape.head_reads
    return {
        "load": shape.weights_bytes,
        "program": shape.on_chip_parameters,
        "evaluate": load.eval_tokens * token_reads,
        "outliers": shape.on_chip_parameters,
        "teacher": load.calib_tokens * token_reads,
        "plan": load.plan_tokens * shape.layers * (shape.matrices_per_layer + 2) * shape.layer_reads,
        "fit": shape.layers * load.block_steps * load.step_tokens * shape.layer_reads,
        "restore": shape.on_chip_bytes,
    }


def shape_of(model, dtype_bytes: int) -> Shape:
    """The counts of a model built on the meta device (`romer.scale.memory.meta_model`)."""
    from romer.calibration.blocks import decoder_layers
    from romer.noise.config import DEFAULT_ROLES
    from romer.noise.roles import on_chip_tensors

    from romer.cost.usage import token_usage

    chip = on_chip_tensors(model, DEFAULT_ROLES)
    layers = decoder_layers(model)
    first = layers[0][0] + "."
    # what one token reads in the first decoder layer: each expert at its expected use (top-k of E, every expert
    # alike), whether the family fuses its experts or keeps a module per expert
    reads = int(round(sum(sum(m.uses) * m.out_features * m.in_features
                          for m in token_usage(model).matrices if m.layer == 0)))
    head = model.get_output_embeddings()
    on_chip = sum(t.param.numel() for t in chip)
    return Shape(layers=len(layers), weights_bytes=sum(p.numel() for p in model.parameters()) * dtype_bytes,
                 on_chip_parameters=on_chip, on_chip_bytes=on_chip * dtype_bytes, layer_reads=reads,
                 head_reads=head.weight.numel() if head is not None else 0,
                 matrices_per_layer=sum(1 for t in chip if t.name.startswith(first) and t.param.dim() == 2))


def load_rates(device: str) -> dict | None:
    """The rates measured on `device` (cpu, cuda), or None."""
    path = RATES / f"{device}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fit_rates(records: list[tuple[Shape, Workload, dict[str, float]]]) -> dict[str, float]:
    """Seconds per unit of work of each stage, least squares through the origin over the measured records."""
    rates = {}
    for stage in STAGES:
        pairs = [(work(shape, load)[stage], seconds[stage]) for shape, load, seconds in records if stage in seconds]
        if pairs:
            rates[stage] = sum(w * s for w, s in pairs) / sum(w * w for w, _ in pairs)
    return rates


def stage_seconds(shape: Shape, load: Workload, rates: dict[str, float]) -> dict[str, float]:
    units = work(shape, load)
    return {stage: rates[stage] * units[stage] for stage in STAGES if stage in rates}
