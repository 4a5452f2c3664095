"""`ChipCost`: what one operation of a CIM chip costs in energy and time, each parameter with its unit and source.

The chip is tiles of `tile_rows` × `tile_cols` conductances (inputs along rows), each computing one matrix-vector
multiplication (MVM) per input vector at `input_bits`/`output_bits`, the DACs, ADCs and the tile's own digital
post-processing included in `tile_mvm_energy_nj`. A matrix larger than a tile spans ceil(in/rows) × ceil(out/cols)
tiles; a tile used in part costs in proportion to the rows and columns it drives and converts (the DACs drive rows,
the ADCs convert columns: a tile's energy is taken as shared between them). Everything else is digital: a
multiply-accumulate at `digital_precision`, reading a digital number from SRAM (or DRAM for the share of the digital
store beyond `sram_bytes`), a periphery operation (a per-column gain or offset, a norm's element), and moving an
activation byte between tiles. Digital energies from a table at one node are scaled to the chip's node by the
preset's stated rule (its `sources` say which); `romer cost --chip-cost PRESET` lists every value with its source.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import ConfigDict, Field, field_validator

from romer.validation import OneLineErrors

PRECISION_BYTES = {"int8": 1, "fp16": 2, "bf16": 2, "fp32": 4}


class ChipCost(OneLineErrors):
    """The energy and latency of a chip's operations. Units are in the field names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _noun: ClassVar[str] = "chip-cost field"
    _where_listed: ClassVar[str] = "the fields are listed in docs/chip-cost.md"

    name: str = "custom"
    technology: str = Field("", description="what the preset models, in words")
    # ---- analog tiles ----
    tile_rows: int = Field(gt=0, description="inputs per tile (word lines)")
    tile_cols: int = Field(gt=0, description="outputs per tile (ADCs)")
    input_bits: int = Field(8, gt=0)
    output_bits: int = Field(8, gt=0)
    tile_mvm_energy_nj: float = Field(gt=0, description="one MVM of a full tile: array, DACs, ADCs, local digital")
    tile_mvm_latency_ns: float = Field(gt=0, description="one MVM of a tile, input to digital output")
    # ---- digital units ----
    digital_precision: str = "fp16"
    digital_mac_energy_pj: float = Field(gt=0, description="one multiply-accumulate at digital_precision")
    digital_op_energy_pj: float = Field(gt=0, description="one add or compare at digital_precision")
    digital_macs_per_ns: float = Field(gt=0, description="throughput of the digital units beside the tiles")
    sram_read_pj_per_byte: float = Field(gt=0)
    dram_read_pj_per_byte: float = Field(gt=0)
    sram_bytes: int = Field(gt=0, description="digital store held in SRAM; beyond it, read from DRAM")
    move_pj_per_byte: float = Field(ge=0, description="an activation byte moved between tiles or units")
    activation_bytes: int = Field(1, gt=0, description="bytes of one activation moved between tiles")
    sources: dict[str, str] = Field(default_factory=dict, description="field → where its value comes from")

    @field_validator("digital_precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISION_BYTES:
            raise ValueError(f"must be one of {', '.join(PRECISION_BYTES)}")
        return value

    # ---- derived ----------------------------------------------------------------------------
    @property
    def digital_bytes(self) -> int:
        """Bytes of one digital number at `digital_precision`."""
        return PRECISION_BYTES[self.digital_precision]

    def tiles(self, out_features: int, in_features: int) -> int:
        return math.ceil(in_features / self.tile_rows) * math.ceil(out_features / self.tile_cols)

    def mvm_energy_nj(self, out_features: int, in_features: int) -> float:
        """One input vector through an [out, in] matrix on the tiles: each tile's energy in proportion to the rows it
        drives and the columns it converts."""
        return self.tile_mvm_energy_nj * (in_features / self.tile_rows * math.ceil(out_features / self.tile_cols)
                                          + out_features / self.tile_cols * math.ceil(in_features / self.tile_rows)) / 2

    def tops_per_watt(self) -> float:
        """Operations (2 per weight: multiply and add) per joule of one full-tile MVM, in TOPS/W."""
        return 2 * self.tile_rows * self.tile_cols / (self.tile_mvm_energy_nj * 1e-9) / 1e12

    def tile_tops(self) -> float:
        """One tile's throughput in TOPS."""
        return 2 * self.tile_rows * self.tile_cols / (self.tile_mvm_latency_ns * 1e-9) / 1e12

    def table(self) -> list[tuple[str, str, str]]:
        """(field, value, source) for every parameter, in order."""
        rows = []
        for name in type(self).model_fields:
            if name in ("sources", "name", "technology"):
                continue
            rows.append((name, f"{getattr(self, name)}", self.sources.get(name, "")))
        return rows
