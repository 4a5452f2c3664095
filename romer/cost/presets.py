"""Named chip-cost presets, each value with its source. A preset is registered once; a plugin adds its own with
`register_chip_cost` (docs/architecture.md).

Digital energies come from Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, Fig. 1.1.9
(45 nm, 0.9 V): fp16 add 0.4 pJ, fp16 multiply 1.1 pJ, a 64-bit read of a 32 KB SRAM 20 pJ, of DRAM 1.3-2.6 nJ. They
are scaled to 14 nm by first-order CV² scaling, (14/45) × (0.8 V/0.9 V)² = 0.246 (capacitance with the feature
size, the supply from 0.9 V to 0.8 V); DRAM is not scaled (its energy is the DRAM die's and the interface's, not the
logic node's), the midpoint 1.95 nJ per 64 bits is used. The `sram-cim-22nm` preset scales the same table to 22 nm
at its chip's 0.6 V digital supply: (22/45) × (0.6/0.9)² = 0.217. Values marked "assumed" have no published source at hand:
they are stated, not measured, and `romer cost` prints them so that a user replaces them with their own.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from romer.cost.model import ChipCost
from romer.errors import RomerError
from romer.registry import Registry, caller_module

NODE_SCALE_45_TO_14 = (14 / 45) * (0.8 / 0.9) ** 2
NODE_SCALE_45_TO_22 = (22 / 45) * (0.6 / 0.9) ** 2
HOROWITZ_DRAM = "Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit access, midpoint, not node-scaled"
ASSUMED = "assumed (no published figure at hand): replace with your chip's"

CHIP_COSTS: Registry[ChipCost] = Registry("chip-cost preset")


def register_chip_cost(cost: ChipCost) -> ChipCost:
    """Add a preset under `cost.name`; a name already registered is refused in one line naming both origins."""
    return CHIP_COSTS.add(cost.name, cost, caller_module())


def chip_cost_names() -> list[str]:
    return CHIP_COSTS.names()


def get_chip_cost(spec: str) -> ChipCost:
    """A preset by name, or a YAML file of chip-cost fields."""
    if spec.endswith((".yaml", ".yml")):
        return load_chip_cost(spec)
    cost = CHIP_COSTS.get(spec)
    if cost is None:
        raise RomerError(f"unknown chip-cost preset '{spec}'; choose one of {', '.join(chip_cost_names())}, "
                         "or pass a .yaml file")
    return cost


def load_chip_cost(path: str | Path) -> ChipCost:
    """A ChipCost from a YAML file (the preset's fields; `preset: NAME` starts from a preset and overrides it)."""
    path = Path(path)
    if not path.is_file():
        raise RomerError(f"chip-cost file {path} does not exist; pass a preset name or a .yaml file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RomerError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise RomerError(f"{path} must hold a mapping of chip-cost fields; see docs/chip-cost.md")
    base = data.pop("preset", None)
    if base is not None:
        merged = get_chip_cost(str(base)).model_dump() | data
        merged["sources"] = get_chip_cost(str(base)).sources | data.get("sources", {})
        return ChipCost(**merged)
    return ChipCost(**data)


def _digital(scale: float, node: str) -> tuple[dict, dict]:
    """Horowitz's 45 nm table scaled by `scale` (the rule named in `node`); DRAM is not scaled."""
    horowitz = f"Horowitz ISSCC 2014 (45 nm) × {scale:.3f} ({node})"
    values = {"digital_precision": "fp16",
              "digital_mac_energy_pj": (1.1 + 0.4) * scale,
              "digital_op_energy_pj": 0.4 * scale,
              "sram_read_pj_per_byte": 20 / 8 * scale,
              "dram_read_pj_per_byte": 1950 / 8}
    sources = {"digital_precision": "the precision of the digital corrections and outliers (romer fits them in float)",
               "digital_mac_energy_pj": f"fp16 multiply 1.1 pJ + add 0.4 pJ, {horowitz}",
               "digital_op_energy_pj": f"fp16 add 0.4 pJ, {horowitz}",
               "sram_read_pj_per_byte": f"32 KB SRAM, 20 pJ per 64-bit read, {horowitz}",
               "dram_read_pj_per_byte": HOROWITZ_DRAM}
    return values, sources


def _digital_14nm() -> tuple[dict, dict]:
    return _digital(NODE_SCALE_45_TO_14, "CV² scaling to 14 nm, 0.8 V")


def _pcm_64core() -> ChipCost:
    digital, digital_sources = _digital_14nm()
    return ChipCost(
        name="pcm-64core", technology="IBM's 64-core PCM chip (14 nm, 256×256 cores, 8-bit I/O, one-phase read)",
        tile_rows=256, tile_cols=256, input_bits=8, output_bits=8,
        tile_mvm_energy_nj=2 * 256 * 256 / 10.5e12 * 1e9,
        tile_mvm_latency_ns=2 * 256 * 256 / (63.1e12 / 64) * 1e9,
        digital_macs_per_ns=1024, sram_bytes=32 * 2**20, move_pj_per_byte=0.08, activation_bytes=1,
        **digital,
        sources={
            "tile_rows": "Le Gallo et al., Nat. Electron. 2023: 64 cores of 256×256 unit cells",
            "tile_cols": "Le Gallo et al., Nat. Electron. 2023",
            "input_bits": "Le Gallo et al., Nat. Electron. 2023: 8-bit input (PWM) and output (CCO ADC) MVMs",
            "output_bits": "Le Gallo et al., Nat. Electron. 2023",
            "tile_mvm_energy_nj": "HERMES-Core (Khaddam-Aljameh et al., IEEE JSSC 2022), the chip's 256×256 core "
                                  "measured alone: 10.5 TOPS/W at 1 GHz; 2·256² ops / 10.5 TOPS/W = 12.48 nJ",
            "tile_mvm_latency_ns": "Le Gallo et al., Nat. Electron. 2023: 63.1 TOPS one-phase over 64 cores, "
                                   "2·256² ops per MVM: 132.9 ns",
            "digital_macs_per_ns": ASSUMED + " (1,024 fp16 MACs at 1 GHz)",
            "sram_bytes": ASSUMED + " (32 MiB of digital store beside the tiles)",
            "move_pj_per_byte": "IBM 3D-CiM simulator (Büchel et al., Nat. Comput. Sci. 2025) default "
                                "communication energy: 1e-5 nJ per bit",
            "activation_bytes": "8-bit activations between tiles (the chip's 8-bit I/O)",
            **digital_sources})


def _threedsim() -> ChipCost:
    digital, digital_sources = _digital_14nm()
    return ChipCost(
        name="3d-cim", technology="IBM's 3D-CiM LLM accelerator as its simulator prices it (512×512 tiers)",
        tile_rows=512, tile_cols=512, input_bits=8, output_bits=8,
        tile_mvm_energy_nj=10.0, tile_mvm_latency_ns=100.0,
        digital_macs_per_ns=1024, sram_bytes=32 * 2**20, move_pj_per_byte=0.08, activation_bytes=1,
        **digital,
        sources={
            "tile_rows": "IBM/3D-CiM-LLM-Inference-Simulator README example: tier_shape (512, 512)",
            "tile_cols": "IBM/3D-CiM-LLM-Inference-Simulator README example",
            "input_bits": "the simulator's communication assumes 8-bit vectors",
            "output_bits": "the simulator's communication assumes 8-bit vectors",
            "tile_mvm_energy_nj": "IBM/3D-CiM-LLM-Inference-Simulator AcceleratorConfig.mvm_energy = 10 nJ "
                                  "('0.1 W power, 100 ns integration')",
            "tile_mvm_latency_ns": "IBM/3D-CiM-LLM-Inference-Simulator AcceleratorConfig.mvm_latency = 100 ns",
            "digital_macs_per_ns": ASSUMED + " (the simulator prices no digital MAC; 1,024 at 1 GHz)",
            "sram_bytes": ASSUMED,
            "move_pj_per_byte": "IBM/3D-CiM-LLM-Inference-Simulator com_energy: 1e-5 nJ × 8 × vector size",
            "activation_bytes": "the simulator's communication assumes 8-bit vectors",
            **{k: v + " (the simulator prices no digital arithmetic)" for k, v in digital_sources.items()}})


IMAGINE = ("Kneip, Lefebvre, Maistriaux, Bol, 'IMAGINE: an 8-to-1b 22nm FD-SOI compute-in-memory CNN accelerator', "
           "IEEE TCAS-AI 2025 (arXiv 2412.19750), abstract")
IMAGINE_WEIGHTS_PER_ROW = 256 // 8  # weight-parallel: an 8-bit weight spans 8 of the macro's 256 bit columns
IMAGINE_MACRO_BYTES = 1152 * 256 / 8
IMAGINE_MACRO_TOPS = 2.6 * IMAGINE_MACRO_BYTES / 187e3  # 2.6 TOPS/mm² at 8b over the macro's area at 187 kB/mm²


def _sram_cim_22nm() -> ChipCost:
    """A charge-domain SRAM CIM macro, a technology unlike PCM's: weights held in SRAM cells, bit-serial inputs."""
    digital, digital_sources = _digital(NODE_SCALE_45_TO_22, "CV² scaling to 22 nm at IMAGINE's 0.6 V digital supply")
    ops = 2 * 1152 * IMAGINE_WEIGHTS_PER_ROW
    return ChipCost(
        name="sram-cim-22nm",
        technology="a charge-domain SRAM CIM macro, 22 nm FD-SOI (IMAGINE), 8-bit inputs and weights",
        tile_rows=1152, tile_cols=IMAGINE_WEIGHTS_PER_ROW, input_bits=8, output_bits=8,
        tile_mvm_energy_nj=ops / 40e12 * 1e9,
        tile_mvm_latency_ns=ops / (IMAGINE_MACRO_TOPS * 1e12) * 1e9,
        digital_macs_per_ns=1024, sram_bytes=32 * 2**20, move_pj_per_byte=0.08, activation_bytes=1,
        **digital,
        sources={
            "tile_rows": f"{IMAGINE}: a 1152×256 macro, 1152 inputs",
            "tile_cols": f"{IMAGINE}: 256 bit columns, weight-parallel, so 32 outputs of 8-bit weights",
            "input_bits": f"{IMAGINE}: 8b end to end (1-to-8b; the preset takes 8b)",
            "output_bits": IMAGINE,
            "tile_mvm_energy_nj": f"{IMAGINE}: 8b system-level 40 TOPS/W at 0.3/0.6 V; 2·1152·32 ops / 40 TOPS/W = "
                                  "1.84 nJ. The system figure, not the macro's 0.15 POPS/W peak: romer prices moves "
                                  "and norms on top, so part of them is counted twice (against the analog side)",
            "tile_mvm_latency_ns": f"{IMAGINE}: 2.6 TOPS/mm² at 8b and 187 kB/mm², so the 36 kB macro gives "
                                   f"{IMAGINE_MACRO_TOPS:.3f} TOPS: 2·1152·32 ops in {ops / IMAGINE_MACRO_TOPS / 1e3:.1f} ns",
            "digital_macs_per_ns": ASSUMED + " (1,024 fp16 MACs at 1 GHz)",
            "sram_bytes": ASSUMED + " (32 MiB of digital store beside the macros)",
            "move_pj_per_byte": "IBM 3D-CiM simulator (Büchel et al., Nat. Comput. Sci. 2025) default communication "
                                "energy: 1e-5 nJ per bit",
            "activation_bytes": "8-bit activations between macros (the macro's 8-bit I/O)",
            **digital_sources})


def register_builtin_chip_costs() -> None:
    for cost in (_pcm_64core(), _threedsim(), _sram_cim_22nm()):
        if CHIP_COSTS.get(cost.name) is None:
            register_chip_cost(cost)


DEFAULT_CHIP_COST = "pcm-64core"
