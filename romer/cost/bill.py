"""A chip's bill per token: energy and latency of a `Usage` at a `ChipCost`, and the same model all digital.

Energy per token (nJ), in parts:
  analog      Σ over analog slots of uses × the MVM energy of what the slot holds in conductances;
  moves       every matrix use moves its input and output activations between tiles or units;
  digital     every digital number used once per use, one MAC each; the output head and attention's scores
              (2 × context × hidden MACs per layer: q·k and the weighted sum of v), the norms, the routers' top-k and a
              calibration's routing transforms at one add each;
  reads       each digital number read once per batch in which its matrix is used (a slot used u times per token
              is used in a batch of B tokens with probability about min(1, B·u)), from SRAM for the share of the
              digital store that fits in `sram_bytes` and from DRAM beyond; the embedding row from DRAM.
Latency per token (µs), for a batch of B tokens: a decoder layer's matrices of one role run side by side, each on
its own tiles, the roles one after another; a role takes DEPTH steps (attention: q/k/v then o; experts: gate·up
then down), each as long as its slowest matrix or slot, where a slot serves its B·u tokens one after another (the
analog MVM) and its digital numbers at the digital units' throughput. So the busiest expert sets the experts' time:
load imbalance is latency. The layer's digital work (scores, norms, top-k) runs on the digital units after it.
The per-token digital share is the share of the on-chip matrices' multiply-accumulates that the digital units do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass

from romer.cost.model import ChipCost
from romer.cost.usage import DEPTH, Usage


@dataclass(frozen=True)
class Bill:
    chip_cost: str
    batch: int
    context: int
    energy_nj: float            # per token
    analog_nj: float
    moves_nj: float
    digital_nj: float
    reads_nj: float
    latency_us: float           # per token, at `batch`
    balanced_latency_us: float  # the same with every expert of a layer equally loaded
    analog_macs: float          # per token, on-chip matrices' MACs in conductances
    digital_macs: float         # per token, on-chip matrices' MACs in digital units
    digital_store_bytes: int
    all_digital_nj: float       # the same model with every matrix in digital units at this node
    all_digital_latency_us: float

    @property
    def digital_mac_share(self) -> float:
        total = self.analog_macs + self.digital_macs
        return self.digital_macs / total if total else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"digital_mac_share": self.digital_mac_share}


def _read_pj_per_byte(cost: ChipCost, store_bytes: int) -> float:
    """Mean read energy of a byte of a digital store of `store_bytes`: SRAM for what fits, DRAM for the rest."""
    if store_bytes <= 0:
        return cost.sram_read_pj_per_byte
    in_sram = min(1.0, cost.sram_bytes / store_bytes)
    return in_sram * cost.sram_read_pj_per_byte + (1 - in_sram) * cost.dram_read_pj_per_byte


def _slot_ns(cost: ChipCost, tokens: float, numbers: int, moved: bool) -> float:
    """One slot's time on a batch: its tokens through the tiles one after another, and its digital numbers."""
    return (0.0 if moved else tokens * cost.tile_mvm_latency_ns) + tokens * numbers / cost.digital_macs_per_ns


def price(usage: Usage, cost: ChipCost, batch: int = 1, context: int = 1024) -> Bill:
    """The bill of one token of `usage` on `cost`'s chip, in a batch of `batch` tokens attending `context` tokens."""
    if batch < 1 or context < 0:
        raise ValueError("batch must be ≥ 1 and context ≥ 0")
    mac_pj, op_pj, per_ns = cost.digital_mac_energy_pj, cost.digital_op_energy_pj, cost.digital_macs_per_ns
    number_bytes = cost.digital_bytes
    store = sum(sum(m.digital) for m in usage.matrices) * number_bytes + usage.head_macs * number_bytes
    read_pj = _read_pj_per_byte(cost, store)
    analog_nj = moves_pj = digital_pj = reads_pj = 0.0
    analog_macs = digital_macs = 0.0
    step_ns: dict[tuple[int, str], float] = defaultdict(float)      # (layer, role) → slowest matrix, ns per batch
    group_uses: dict[tuple[int, str], list[float]] = defaultdict(list)
    for m in usage.matrices:
        group_uses[(m.layer, m.role)].extend(m.uses)
    mean_use = {key: sum(uses) / len(uses) for key, uses in group_uses.items()}
    balanced_ns: dict[tuple[int, str], float] = defaultdict(float)  # the same, each slot at its group's mean use
    for m in usage.matrices:
        mvm_nj = cost.mvm_energy_nj(*m.arrays) if m.arrays is not None else 0.0
        key = (m.layer, m.role)
        for use, numbers, moved in zip(m.uses, m.digital, m.moved):
            if not moved:
                analog_nj += use * mvm_nj
                analog_macs += use * m.out_features * m.in_features
            digital_pj += use * numbers * mac_pj
            digital_macs += use * numbers
            reads_pj += numbers * number_bytes * read_pj * min(1.0, batch * use) / batch
            moves_pj += use * (m.in_features + m.out_features) * cost.activation_bytes * cost.move_pj_per_byte
            step_ns[key] = max(step_ns[key], _slot_ns(cost, batch * use, numbers, moved))
            balanced_ns[key] = max(balanced_ns[key], _slot_ns(cost, batch * mean_use[key], numbers, moved))
    scores_macs = 2 * context * usage.hidden * usage.layers
    extra_ops = usage.norm_ops + usage.router_ops + usage.transform_ops
    fixed_pj = (usage.head_macs + scores_macs) * mac_pj + extra_ops * op_pj
    fixed_reads_pj = usage.head_macs * number_bytes * read_pj / batch + usage.embedding_bytes * cost.dram_read_pj_per_byte
    fixed_ns = batch * (usage.head_macs + scores_macs + extra_ops) / per_ns
    layers_ns = sum(DEPTH.get(role, 1) * ns for (_, role), ns in step_ns.items())
    balanced_layers_ns = sum(DEPTH.get(role, 1) * ns for (_, role), ns in balanced_ns.items())
    energy_nj = analog_nj + (moves_pj + digital_pj + reads_pj + fixed_pj + fixed_reads_pj) / 1000

    # the same model all digital: every on-chip matrix's weights as digital numbers, read from the store they fill
    dense_store = (usage.head_macs + sum(len(m.uses) * m.out_features * m.in_features for m in usage.matrices)) * number_bytes
    dense_read = _read_pj_per_byte(cost, dense_store)
    dense_pj = 0.0
    dense_steps: dict[tuple[int, str], float] = defaultdict(float)
    for m in usage.matrices:
        weights = m.out_features * m.in_features
        for use in m.uses:
            dense_pj += use * weights * mac_pj + weights * number_bytes * dense_read * min(1.0, batch * use) / batch
        dense_steps[(m.layer, m.role)] = max(dense_steps[(m.layer, m.role)], batch * max(m.uses) * weights / per_ns)
    dense_pj += fixed_pj + usage.head_macs * number_bytes * (dense_read - read_pj) / batch + fixed_reads_pj
    dense_ns = sum(DEPTH.get(role, 1) * ns for (_, role), ns in dense_steps.items()) + fixed_ns
    return Bill(chip_cost=cost.name, batch=batch, context=context, energy_nj=energy_nj, analog_nj=analog_nj,
                moves_nj=moves_pj / 1000, digital_nj=(digital_pj + fixed_pj) / 1000,
                reads_nj=(reads_pj + fixed_reads_pj) / 1000,
                latency_us=(layers_ns + fixed_ns) / batch / 1000,
                balanced_latency_us=(balanced_layers_ns + fixed_ns) / batch / 1000,
                analog_macs=analog_macs, digital_macs=digital_macs, digital_store_bytes=int(store),
                all_digital_nj=dense_pj / 1000, all_digital_latency_us=dense_ns / batch / 1000)
