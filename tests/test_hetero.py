"""hetero, the field's heterogeneous analog/digital MoE: experts with the largest max neuron norm (and attention) in
digital units; hetero-measured ranks the experts by their measured held-out gain instead."""

from __future__ import annotations

import pytest
import torch

import romer
from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.calibration.methods.hetero import max_neuron_norm
from romer.calibration.norms import norm_gains
from tests.families import build


def ids(seed: int = 0, tokens: int = 64 * 8) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(5).view(-1, 64)).logits


def expert_count(chip) -> dict[str, int]:
    return {n: chip.shape(n)[0] for n in chip.names() if chip.role(n) == "experts" and len(chip.shape(n)) == 3}


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "mixtral"])
def test_hetero_moves_each_layers_top_experts_attention_and_routers_and_undoes_exactly(family):
    model = build(family)
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=2) as chip:
        noisy = logits(model)
        before = chip.on_chip_parameters
        calibration = calibrate_(model, CalibrationConfig(method="hetero", digital_experts=0.25), ids())
        moved = calibration.report["hetero"]["layers"]
        for layer, record in moved.items():
            scores = record["scores"]
            assert len(record["experts"]) == round(0.25 * len(scores))
            assert min(scores[e] for e in record["experts"]) >= max(
                s for e, s in enumerate(scores) if e not in record["experts"])
        attention = sum(chip.size(n) for n in chip.names() if chip.role(n) == "attention")
        experts = sum(chip.size(n) for n in chip.names() if chip.role(n) == "experts")
        routers = sum(chip.size(n) for n in chip.names() if chip.role(n) == "router")
        expected = attention + routers + experts // 4  # a quarter of each layer's experts, each the same size
        assert calibration.digital_weights() == expected == before - chip.on_chip_parameters
        assert calibration.digital_share() == pytest.approx(expected / chip.total_parameters)
        assert all(chip.is_digital(n) for n in chip.names() if chip.role(n) in ("attention", "router"))
        calibration.remove()
        assert chip.on_chip_parameters == before
        assert torch.equal(logits(model), noisy)


def test_a_digital_expert_computes_with_its_clean_weights_and_no_periphery():
    """Every chip effect (offsets on the fused path, read noise and the analog tile path on the eager one) stays off
    a digital slot: with every expert and every other tensor digital, the model is the clean model."""
    for preset, overrides in (("cim-80c", {}), ("cim-80c", {"read_sigma": 0.02}), ("cim-80c", {"mode": "analog"})):
        model = build("olmoe")
        clean = logits(model)
        with apply_noise_(model, NoiseConfig.preset(preset, **overrides), seed=1) as chip:
            for name in chip.names():
                if len(chip.shape(name)) == 3:
                    for slot in range(chip.shape(name)[0]):
                        chip.make_digital(name, slot=slot)
                else:
                    chip.make_digital(name)
            assert chip.on_chip_parameters == 0
            torch.testing.assert_close(logits(model), clean, rtol=1e-5, atol=1e-5)


def test_max_neuron_norm_is_the_largest_neuron_input_norm():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        from romer.calibration.state import Calibration

        calibration = Calibration(model, CalibrationConfig(method="hetero"), chip)
        layer = calibration.layers[0]
        experts = layer.experts
        hidden = layer.router.weight.shape[-1]
        for slot in (0, 3):
            gate_up = chip.clean_value(chip.name_of(experts, "gate_up_proj"), slot).float()
            gate, up = gate_up.chunk(2)
            expected = float((gate.pow(2).sum(1) + up.pow(2).sum(1)).sqrt().max())
            from romer.calibration.methods.hetero import expert_matrices

            assert max_neuron_norm(chip, expert_matrices(calibration, chip, layer, slot), hidden) == pytest.approx(
                expected, rel=1e-6)


def test_hetero_measured_ranks_by_measured_gain():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0):
        calibration = calibrate_(model, CalibrationConfig(method="hetero-measured", digital_attention=False,
                                                          digital_experts=0.25), ids(tokens=64 * 16))
        for record in calibration.report["hetero"]["layers"].values():
            ranked = sorted(range(len(record["scores"])), key=lambda e: record["scores"][e], reverse=True)
            assert sorted(ranked[:len(record["experts"])]) == record["experts"]
        assert calibration.report["hetero"]["ranking"] == "measured held-out gain"
        calibration.remove()


def test_hetero_saves_and_reloads_bit_for_bit(tiny_moe_dir, tmp_path):
    from romer.calibration.persist import save_calibrated

    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3) as chip:
        calibration = calibrate_(model, CalibrationConfig(method="hetero"), ids())
        expected, share = logits(model), calibration.digital_share()
        assert any("[" in key for key in calibration.as_dict()["digital"])  # single expert slots recorded
        save_calibrated(model, tokenizer, calibration, tmp_path / "hetero")
        calibration.remove()
    loaded, _ = romer.load_model(str(tmp_path / "hetero"))
    carried = romer.load_calibration(loaded, tmp_path / "hetero")
    with apply_noise_(loaded, config, seed=3, calibration=carried) as chip:
        assert torch.equal(logits(loaded), expected)
        assert carried.digital_share() == pytest.approx(share)


def test_attention_retune_moves_attention_then_fits_the_rest_within_its_budget():
    model = build("olmoe")
    fast = dict(calib_tokens=64 * 12, window=64, retune_steps=6, retune_eval_every=3, retune_budget=0.05)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=1) as chip:
        noisy = logits(model)
        calibration = calibrate_(model, CalibrationConfig(method="attention-retune", **fast), ids(tokens=64 * 12))
        attention = [n for n in chip.names() if chip.role(n) == "attention"]
        assert sorted(calibration.digital) == sorted(attention)  # no expert moved
        assert not set(calibration.corrections) & set(attention)  # the fit corrects what stays on the chip
        stored = sum(c.stored_parameters for c in calibration.corrections.values())
        norms = sum(p.numel() for p in norm_gains(model).values())  # every norm gain is re-set, and counted
        biases = sum(layer.num_experts for layer in calibration.layers) if calibration.report["retune"]["router_bias"] else 0
        assert stored + norms + biases <= 0.05 * chip.total_parameters  # the budget holds everything retune adds
        assert calibration.digital_weights() == sum(chip.size(n) for n in attention) + stored + norms + biases
        calibration.remove()
        assert torch.equal(logits(model), noisy)
