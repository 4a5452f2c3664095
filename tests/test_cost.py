"""romer.cost: the bill checked by hand, the presets against their anchors, usage from a model and a chip."""

from __future__ import annotations

import json

import pytest
from romer.cost import ChipCost, MatrixUse, Usage, get_chip_cost, load_chip_cost, price, token_usage
from romer.errors import RomerError

HAND = dict(name="hand", tile_rows=4, tile_cols=4, tile_mvm_energy_nj=1.0, tile_mvm_latency_ns=10.0,
            digital_mac_energy_pj=1.0, digital_op_energy_pj=0.5, digital_macs_per_ns=2.0, sram_read_pj_per_byte=0.1,
            dram_read_pj_per_byte=10.0, sram_bytes=10**9, move_pj_per_byte=0.01, activation_bytes=1)


def hand_usage() -> Usage:
    """One layer: a 4×4 attention matrix, and two experts of [8, 4] routed 0.75 / 0.25 at top-2, the first
    holding 3 outliers in digital units."""
    return Usage(matrices=[
        MatrixUse("q", 0, "attention", 4, 4, (4, 4), (1.0,), (0,), (False,)),
        MatrixUse("experts", 0, "experts", 8, 4, (8, 4), (1.5, 0.5), (3, 0), (False, False)),
    ], layers=1, moe_layers=1, hidden=4)


def test_bill_by_hand():
    bill = price(hand_usage(), ChipCost(**HAND), batch=1, context=0)
    # analog: q one full tile (1 nJ); an expert spans 1 × 2 tiles, all rows and columns driven: 2 nJ, used 2 times
    assert bill.analog_nj == pytest.approx(5.0)
    # moves 0.32 pJ, outliers 1.5 × 3 MACs at 1 pJ, their reads 3 numbers × 2 bytes × 0.1 pJ once per token
    assert bill.energy_nj == pytest.approx(5.0 + (0.32 + 4.5 + 0.6) / 1000)
    # attention 2 steps of 10 ns; the busiest expert 1.5 tokens × 10 ns + 1.5 × 3 MACs / 2 per ns, 2 steps
    assert bill.latency_us == pytest.approx((20 + 2 * 17.25) / 1000)
    assert bill.balanced_latency_us == pytest.approx((20 + 2 * 11.5) / 1000)
    assert bill.digital_mac_share == pytest.approx(4.5 / (80 + 4.5))
    # all digital: every weight one MAC and one read per use (the store fits the SRAM)
    assert bill.all_digital_nj == pytest.approx((16 + 3.2 + 48 + 6.4 + 16 + 3.2) / 1000)
    assert bill.all_digital_latency_us == pytest.approx((16 + 48) / 1000)


def test_usage_round_trips_with_and_without_json():
    usage = hand_usage()  # the experts' digital numbers differ per slot: kept as a list, the others written once
    for data in (usage.as_dict(), json.loads(json.dumps(usage.as_dict()))):
        assert Usage.from_dict(data) == usage
    assert usage.as_dict()["matrices"][0]["digital"] == 0 and list(usage.as_dict()["matrices"][1]["digital"]) == [3, 0]


def test_batch_amortises_reads_and_imbalance_costs_latency():
    usage = hand_usage()
    one, many = price(usage, ChipCost(**HAND), batch=1, context=0), price(usage, ChipCost(**HAND), batch=8, context=0)
    assert many.reads_nj == pytest.approx(one.reads_nj / 8)
    balanced = Usage(matrices=[usage.matrices[0], MatrixUse("experts", 0, "experts", 8, 4, (8, 4), (1.0, 1.0), (3, 0),
                                                            (False, False))], layers=1, moe_layers=1, hidden=4)
    assert price(balanced, ChipCost(**HAND), batch=1, context=0).latency_us < one.latency_us


def test_moved_matrix_pays_digital_not_analog():
    usage = Usage(matrices=[MatrixUse("q", 0, "attention", 4, 4, None, (1.0,), (16,), (True,))], layers=1,
                  moe_layers=0, hidden=4)
    bill = price(usage, ChipCost(**HAND), batch=1, context=0)
    assert bill.analog_nj == 0 and bill.digital_mac_share == 1.0
    assert bill.latency_us == pytest.approx(2 * 16 / 2 / 1000)


def test_pcm_64core_reproduces_the_chip_tops_per_watt():
    """Le Gallo et al. 2023: 9.76 TOPS/W for 8-bit 256×256 one-phase MVMs on the 64-core chip. romer's model of
    one such MVM: the core's own energy (HERMES-Core, measured alone) and the input and output vectors moved across
    the chip; within 10 %."""
    cost = get_chip_cost("pcm-64core")
    energy_nj = cost.mvm_energy_nj(256, 256) + 512 * cost.activation_bytes * cost.move_pj_per_byte / 1000
    tops_per_watt = 2 * 256 * 256 / (energy_nj * 1e-9) / 1e12
    assert abs(tops_per_watt / 9.76 - 1) < 0.10
    assert cost.tile_tops() * 64 == pytest.approx(63.1, rel=1e-6)  # the latency is the chip's published throughput


def test_sram_cim_preset_holds_its_chip_figures_and_prices_narrow_tiles_by_hand():
    """IMAGINE (Kneip et al. 2025): 40 TOPS/W at 8b on a 1152×256 macro whose 8-bit weights span 8 bit columns
    each, 2.6 TOPS/mm² at 187 kB/mm². An [64, 1152] matrix needs two 32-column macros, every row driven."""
    cost = get_chip_cost("sram-cim-22nm")
    assert (cost.tile_rows, cost.tile_cols) == (1152, 32)
    assert cost.tops_per_watt() == pytest.approx(40.0)
    assert cost.tile_tops() == pytest.approx(2.6 * 1152 * 256 / 8 / 187e3)
    assert cost.mvm_energy_nj(64, 1152) == pytest.approx(2 * cost.tile_mvm_energy_nj)
    assert cost.mvm_energy_nj(16, 576) == pytest.approx(cost.tile_mvm_energy_nj * (0.5 + 0.5) / 2)
    assert cost.digital_mac_energy_pj < get_chip_cost("pcm-64core").digital_mac_energy_pj  # 0.217 < 0.246


def test_every_preset_value_has_a_source():
    for name in ("pcm-64core", "3d-cim", "sram-cim-22nm"):
        cost = get_chip_cost(name)
        assert all(source for _, _, source in cost.table()), name


def test_yaml_overrides_a_preset_and_bad_fields_are_one_line(tmp_path):
    path = tmp_path / "chip.yaml"
    path.write_text("preset: pcm-64core\nname: mine\nsram_bytes: 1024\nsources: {sram_bytes: my chip}\n")
    cost = load_chip_cost(path)
    assert cost.sram_bytes == 1024 and cost.tile_rows == 256 and cost.sources["sram_bytes"] == "my chip"
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: pcm-64core\ntile_rows: -3\n")
    with pytest.raises(RomerError) as error:
        load_chip_cost(bad)
    assert "\n" not in str(error.value) and "tile_rows" in str(error.value)
    with pytest.raises(RomerError, match="unknown chip-cost preset"):
        get_chip_cost("nope")


def test_usage_of_a_model_and_a_chip(tiny_moe_dir):
    import romer
    from romer.noise import NoiseConfig, apply_noise_

    model, _ = romer.load_model(str(tiny_moe_dir))
    usage = token_usage(model)
    experts = [m for m in usage.matrices if m.role == "experts"]
    assert experts and all(sum(m.uses) == pytest.approx(model.config.num_experts_per_tok) for m in experts)
    assert all(m.uses == (1.0,) for m in usage.matrices if m.role == "attention")
    frequency = [[1.0] + [0.0] * (model.config.num_experts - 1)] * usage.moe_layers
    skewed = token_usage(model, frequency=frequency)
    cost = get_chip_cost("pcm-64core")
    assert price(skewed, cost).latency_us > price(usage, cost).latency_us  # one expert takes every token
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        name = next(m.name for m in usage.matrices if m.role == "attention")
        chip.make_digital(name)
        moved = token_usage(model, chip)
        row = next(m for m in moved.matrices if m.name == name)
        assert row.moved == (True,) and row.arrays is None and row.digital == (row.out_features * row.in_features,)
        assert price(moved, cost).digital_mac_share > 0
    assert json.loads(json.dumps(moved.as_dict())) and Usage.from_dict(moved.as_dict()) == moved


def test_cost_command(tmp_path):
    from typer.testing import CliRunner

    from romer.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["cost", "--model", "romer-tiny", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["bill"]["energy_nj"] > 0 and record["bill"]["all_digital_nj"] > 0
    for args, message in ((["--run", str(tmp_path)], "results.jsonl"), (["--model", "romer-tiny", "--batch", "0"],
                                                                          "--batch"), ([], "--model")):
        result = runner.invoke(app, ["cost", *args])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_3d_cim_reproduces_the_simulators_mvm_energy():
    """IBM's 3D-CiM simulator on its README example (3 layers, d_model 512, d_ff 2048, vocabulary 1,024, tokens 1 to 12
    without a KV cache) schedules 2,464 MVMs, 24,640 nJ (`python bench/threedsim_anchor.py --simulator SRC` runs it
    and prints both). romer's `3d-cim` prices the same matrices: 66 token passes, a one-hot embedding tier per token,
    the head once per generated token."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "threedsim_anchor.py"
    spec = importlib.util.spec_from_file_location("threedsim_anchor", path)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    ours = anchor.romer_mvm_energy_nj()
    assert ours["token_passes"] == 66
    assert abs(ours["mvm_energy_nj"] / 24640 - 1) < 0.10


def test_usage_of_a_model_whose_decoder_layers_romer_cannot_name(tmp_path):
    """Code shipped with a checkpoint (DeepSeek-MoE's form) has decoder layers of its own class: each MoE block's
    parent stands for its layer, and `romer run` still prices the chip."""
    from transformers import AutoModelForCausalLM

    from tests.families import deepseek_moe_folder

    folder = deepseek_moe_folder(tmp_path / "deepseek-moe")
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    usage = token_usage(model)
    experts = [m for m in usage.matrices if m.role == "experts"]
    assert {m.layer for m in experts} == set(range(usage.moe_layers)) and usage.moe_layers >= 1
    assert price(usage, get_chip_cost("pcm-64core")).energy_nj > 0
