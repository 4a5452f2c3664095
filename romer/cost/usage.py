"""What one token asks of a chip: every on-chip matrix with its expected uses per token and the digital numbers each
use reads, from the model's structure, the chip's layout, a calibration's digital parts and the routing measured.

An expert slot is used top_k × (its share of the layer's selections) times per token, the share measured on the
evaluation text for this chip and method (`romer.moe.metrics`, the records' `frequency`); every other on-chip matrix
(attention, routers, shared experts) once. Each digital number a calibration keeps for a matrix is read and used once
per use of that matrix: a column's gain or offset is one multiply, an adapter's U and V one multiply-accumulate per
number, an outlier one multiply-accumulate (its position is read with it), HPD's Vᵀ one per number, and a matrix moved
to the digital units whole is out × in of them. Besides the on-chip matrices a token always pays the model's digital
work, the same for every method: the output head (digital unless `lm_head` is on the chip), attention's scores, the
norms, each MoE layer's top-k, and its embedding row. `Usage` is priced by `romer.cost.bill.price`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from romer.errors import RomerError
from romer.noise.config import DEFAULT_ROLES

DEPTH = {"attention": 2, "experts": 2, "shared_experts": 2, "dense_mlp": 2, "router": 1, "lm_head": 1}


@dataclass(frozen=True)
class MatrixUse:
    """One on-chip tensor: a matrix of its own (one slot) or a fused expert tensor (a slot per expert)."""

    name: str
    layer: int            # decoder layer (0-based); −1 outside every decoder layer
    role: str
    out_features: int
    in_features: int
    arrays: tuple[int, int] | None  # [out, in] held in conductances per slot; None when moved to digital whole
    uses: tuple[float, ...]         # per slot: expected uses per token
    digital: tuple[int, ...]        # per slot: digital numbers read and used once per use
    moved: tuple[bool, ...]         # per slot: moved to the digital units whole (its analog MVM not run)

    def as_dict(self) -> dict:
        """For a record: a per-slot list whose entries are all equal is written once."""
        data = asdict(self)
        for key in ("digital", "moved"):
            if len(set(data[key])) == 1:
                data[key] = data[key][0]
        data["uses"] = [float(f"{u:.6g}") for u in data["uses"]]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "MatrixUse":
        slots = len(data["uses"])
        spread = {key: tuple(data[key]) if isinstance(data[key], (list, tuple)) else (data[key],) * slots
                  for key in ("digital", "moved")}
        return cls(**{**data, "arrays": tuple(data["arrays"]) if data["arrays"] is not None else None,
                      "uses": tuple(data["uses"]), **spread})


@dataclass
class Usage:
    """A token's work on one chip: the on-chip matrices and the digital work every method pays alike."""

    matrices: list[MatrixUse]
    layers: int
    moe_layers: int
    hidden: int
    head_macs: int = 0             # output head, digital (0 when on the chip: it is then a matrix above)
    router_ops: int = 0            # per token, over all MoE layers: softmax and top-k over the experts
    norm_ops: int = 0              # per token: every norm's elements
    embedding_bytes: int = 0       # per token: the embedding row read
    transform_ops: int = 0         # per token: a calibration's routing transforms (statistics, fences, biases)
    source: dict = field(default_factory=dict)  # how the uses were found: measured frequency or uniform

    def as_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "matrices"},
                "matrices": [m.as_dict() for m in self.matrices]}

    @classmethod
    def from_dict(cls, data: dict) -> "Usage":
        matrices = [MatrixUse.from_dict(m) for m in data["matrices"]]
        return cls(matrices=matrices, **{k: v for k, v in data.items() if k != "matrices"})


def _layer_of(name: str, decoder: list[str]) -> int:
    for index, prefix in enumerate(decoder):
        if name.startswith(prefix + "."):
            return index
    return -1


def token_usage(model: nn.Module, chip=None, calibration=None, frequency: list[list[float]] | None = None,
                roles: tuple[str, ...] = DEFAULT_ROLES) -> Usage:
    """The usage of `model` per token. `chip` (a ChipHandle): its tensors, what it moved to digital units, its
    outliers and decompositions; without one, the matrices of `roles` as the model holds them (a model built on the
    meta device is enough). `calibration`: its digital corrections and routing transforms. `frequency`: each MoE
    layer's expert shares as measured ([layer][expert], each row summing to 1); None: every expert alike."""
    from romer.calibration.blocks import decoder_layers
    from romer.moe.adapter import adapter_for
    from romer.noise.roles import on_chip_tensors

    adapter = adapter_for(model)
    moe = adapter.layers(model)
    try:
        decoder = [name for name, _ in decoder_layers(model)]
    except RomerError:  # decoder layers of a class romer cannot name (code shipped with a checkpoint): each MoE
        decoder = [layer.name.rsplit(".", 1)[0] for layer in moe]  # block's parent stands for its layer
    tensors = on_chip_tensors(model, roles) if chip is None else [chip.tensor(n) for n in chip.names()]
    name_of = {(id(t.module), t.attribute): t.name for t in tensors}
    # each expert matrix's (MoE layer, slot): a fused tensor's slots are its experts; a module per expert is one slot
    expert_slot: dict[str, tuple[int, int | None]] = {}
    for layer in moe:
        for slot in range(layer.num_experts):
            for module, attribute, index in adapter.expert_weights(layer, slot):
                name = name_of.get((id(module), attribute))
                if name is not None:
                    expert_slot[name] = (layer.index, slot if index is None else None)
    shares = [list(row) for row in frequency] if frequency is not None else [
        [1.0 / layer.num_experts] * layer.num_experts for layer in moe]
    corrections = dict(calibration.correction_items()) if calibration is not None else {}

    matrices = []
    for tensor in tensors:
        shape = tuple(chip.shape(tensor.name)) if chip is not None else tuple(tensor.param.shape)
        out_features, in_features = shape[-2:]
        slots = shape[0] if len(shape) == 3 else 1
        if tensor.name in expert_slot:
            index, single = expert_slot[tensor.name]
            top_k = moe[index].top_k
            uses = [top_k * shares[index][single]] if single is not None else [top_k * s for s in shares[index][:slots]]
        else:
            uses = [1.0] * slots  # a fused tensor outside the experts (none known) is used whole
        slot_keys = [None] if slots == 1 and len(shape) == 2 else list(range(slots))
        moved = [chip is not None and chip.is_digital(tensor.name, key) for key in slot_keys]  # a tensor moved whole
        outliers = chip.outlier_counts(tensor.name) if chip is not None else {}
        correction = corrections.get(tensor.name)
        per_slot_correction = correction.stored_parameters // (correction.slots or 1) if correction is not None else 0
        factors = chip.factor_weights(tensor.name) if chip is not None and tensor.name in chip.decomposed_names() else 0
        digital = []
        for key, whole in zip(slot_keys, moved):
            if whole:
                digital.append(out_features * in_features + per_slot_correction)
            else:
                slot_factor = (chip.factor_weights(tensor.name, key)
                               if chip is not None and key is not None and key in chip.decomposed_slots(tensor.name) else 0)
                digital.append(outliers.get(key, 0) + per_slot_correction + factors + slot_factor)
        arrays = None if all(moved) else (tuple(chip.arrays_shape(tensor.name)) if chip is not None
                                           else (out_features, in_features))
        matrices.append(MatrixUse(tensor.name, _layer_of(tensor.name, decoder), tensor.role, int(out_features),
                                  int(in_features), arrays, tuple(float(u) for u in uses), tuple(int(d) for d in digital),
                                  tuple(bool(m) for m in moved)))

    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = int(text.hidden_size)
    head = model.get_output_embeddings()
    head_on_chip = any(m.role == "lm_head" for m in matrices)
    head_macs = 0 if head is None or head_on_chip else int(head.weight.shape[0] * head.weight.shape[1])
    norms = sum(int(m.weight.numel()) for m in model.modules()
                if "norm" in type(m).__name__.lower() and isinstance(getattr(m, "weight", None), nn.Parameter))
    router_ops = sum(layer.num_experts * (1 + layer.top_k) for layer in moe)
    transforms = calibration.routing_parameters() if calibration is not None else 0
    return Usage(matrices=matrices, layers=len(decoder), moe_layers=len(moe), hidden=hidden, head_macs=head_macs,
                 router_ops=router_ops, norm_ops=norms, embedding_bytes=hidden, transform_ops=int(transforms),
                 source={"routing": "measured" if frequency is not None else "uniform"})
