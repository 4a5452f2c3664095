"""hpd, the ROMER authors' hybrid projection decomposition: U·Σ in the arrays, Vᵀ in digital units."""

from __future__ import annotations

import pytest
import torch

import romer
from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.calibration.persist import save_calibrated
from tests.families import build


def ids(seed: int = 0, tokens: int = 64 * 8) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(5, 64 * 4).view(-1, 64)).logits


def matrices(chip) -> list[str]:
    return [n for n in chip.names() if len(chip.shape(n)) == 2]


def test_the_decomposition_is_exact_before_noise_and_the_arrays_hold_u_sigma():
    model = build("olmoe")
    clean = logits(model)
    with apply_noise_(model, NoiseConfig.preset("ideal"), seed=0) as chip:
        for name in matrices(chip):
            chip.decompose(name)
        torch.testing.assert_close(logits(model), clean, rtol=1e-4, atol=1e-4)
        expected = chip.total_parameters - sum(chip.size(n) - chip.shape(n)[0] * min(chip.shape(n))
                                               for n in matrices(chip))
        assert chip.on_chip_parameters == expected


def test_the_factor_is_programmed_from_its_own_streams_and_undecomposing_restores_the_bits():
    model = build("qwen2_moe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=4) as chip:
        noisy = logits(model)
        name = matrices(chip)[0]
        chip.decompose(name)
        first = logits(model)
        with chip.suspended():
            pass
        assert torch.equal(logits(model), first)  # programmed again from the same streams
        chip.decompose(name, False)
        assert torch.equal(logits(model), noisy)


@pytest.mark.parametrize("family", ["olmoe", "mixtral"])
def test_hpd_decomposes_within_its_budget_counts_the_digital_factor_and_undoes_exactly(family):
    model = build(family)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=1) as chip:
        noisy = logits(model)
        calibration = calibrate_(model, CalibrationConfig(method="hpd", hpd_reading="ranked", digital_budget=0.2),
                                 ids())
        decomposed = calibration.report["hpd"]["decomposed"]
        assert decomposed and all(len(chip.shape(n)) == 2 and chip.role(n) != "router" for n in decomposed)
        digital = sum(min(chip.shape(n)) * chip.shape(n)[1] for n in decomposed)
        assert calibration.digital_weights() == digital <= 0.2 * chip.total_parameters
        assert calibration.digital_share() == pytest.approx(digital / chip.total_parameters)
        gains = {r["tensor"]: r["gain_per_mweight"] for r in calibration.report["hpd_sensitivity"]}
        assert all(gains[n] > 0 for n in decomposed)
        calibration.remove()
        assert chip.decomposed_names() == []
        assert torch.equal(logits(model), noisy)


def test_hpd_saves_and_reloads_bit_for_bit(tiny_moe_dir, tmp_path):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3):
        calibration = calibrate_(model, CalibrationConfig(method="hpd", hpd_reading="every", digital_budget=0.05),
                                 ids())
        assert calibration.decomposed_names()
        expected = logits(model)
        save_calibrated(model, tokenizer, calibration, tmp_path / "hpd")
        calibration.remove()
    loaded, _ = romer.load_model(str(tmp_path / "hpd"))
    carried = romer.load_calibration(loaded, tmp_path / "hpd")
    with apply_noise_(loaded, config, seed=3, calibration=carried):
        assert torch.equal(logits(loaded), expected)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3"])
def test_hpd_as_published_decomposes_the_last_layers_output_projection_and_never_a_router(family):
    model = build(family)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=2) as chip:
        last = calibrate_(model, CalibrationConfig(method="hpd"), ids())
        layers = model.config.num_hidden_layers  # decoder layers (a dense first layer included)
        assert last.decomposed == [f"model.layers.{layers - 1}.self_attn.o_proj.weight"]
        assert last.report["tokens"]["holdout"] == 0  # data-free: no ranking
        last.remove()
        every = calibrate_(model, CalibrationConfig(method="hpd", hpd_reading="every", digital_budget=1.0), ids())
        assert every.decomposed == sorted(f"model.layers.{i}.self_attn.o_proj.weight" for i in range(layers))
        every.remove()


def test_the_control_moves_the_same_matrix_whole_at_the_same_share():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=2):
        decomposed = calibrate_(model, CalibrationConfig(method="hpd"), ids())
        share, name = decomposed.digital_share(), decomposed.decomposed[0]
        decomposed.remove()
        control = calibrate_(model, CalibrationConfig(method="hpd", hpd_whole=True), ids())
        assert control.digital == [name] and not control.decomposed
        assert control.digital_share() == share  # a square matrix: Vᵀ is as large as W
        control.remove()


DOWN = "model.layers.2.mlp.experts.down_proj"


def test_a_decomposed_expert_slot_is_exact_before_noise_and_counts_its_own_factor():
    model = build("olmoe")
    clean = logits(model)
    with apply_noise_(model, NoiseConfig.preset("ideal"), seed=0) as chip:
        for slot in range(chip.shape(DOWN)[0]):
            chip.decompose(DOWN, slot=slot)
        assert chip.decomposed_slots(DOWN) == list(range(8)) and chip.decomposed_names() == []
        assert chip.experts_path() == "eager"  # each slot's Vᵀ runs before its arrays, one expert at a time
        torch.testing.assert_close(logits(model), clean, rtol=1e-4, atol=1e-4)
        assert chip.factor_weights(DOWN, 3) == 16 * 16  # Vᵀ [r, in], r = min(32, 16)
        assert chip.on_chip_parameters == chip.total_parameters  # U·Σ [32, 16] fills the slot's arrays


def test_a_decomposed_slot_draws_from_streams_of_its_own_and_leaves_every_other_slot_bit_for_bit():
    """On a noisy chip the decomposed slot's arrays hold a noisy U·Σ, not W; the other slots of the tensor and every
    other tensor keep their bits; undecomposing and the clean twin's visit give back the same chip."""
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=4) as chip:
        noisy, programmed = logits(model), chip.module_of(DOWN)[0].down_proj.detach().clone()
        chip.decompose(DOWN, slot=5)
        now = chip.module_of(DOWN)[0].down_proj.detach().as_subclass(torch.Tensor)
        assert torch.equal(now[:5], programmed[:5]) and torch.equal(now[6:], programmed[6:])
        assert not torch.equal(now[5], programmed[5])
        relative = (now[5].double() - chip.clean_value(DOWN, 5).double()).norm() / chip.clean_value(DOWN, 5).norm()
        assert relative > 0.5  # the arrays hold U·Σ, far from W itself
        first = logits(model)
        assert not torch.equal(first, noisy)
        with chip.suspended():
            pass
        assert torch.equal(logits(model), first)
        chip.decompose(DOWN, False, slot=5)
        assert torch.equal(chip.module_of(DOWN)[0].down_proj.detach().as_subclass(torch.Tensor), programmed)


def test_hpd_last_down_decomposes_every_slot_of_the_last_down_projection_and_saves_and_reloads(tiny_moe_dir, tmp_path):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3) as chip:
        noisy = logits(model)
        calibration = calibrate_(model, CalibrationConfig(method="hpd", hpd_reading="last-down"), ids())
        name = calibration.report["hpd"]["matrices"][0]
        experts, out_dim, in_dim = chip.shape(name)
        assert name == f"model.layers.{model.config.num_hidden_layers - 1}.mlp.experts.down_proj"
        assert calibration.decomposed == sorted(f"{name}[{slot}]" for slot in range(experts))
        assert calibration.digital_weights() == experts * in_dim * in_dim
        expected = logits(model)
        save_calibrated(model, tokenizer, calibration, tmp_path / "hpd")
        calibration.remove()
        assert chip.decomposed_slots(name) == [] and torch.equal(logits(model), noisy)
        control = calibrate_(model, CalibrationConfig(method="hpd", hpd_reading="last-down", hpd_whole=True), ids())
        assert control.digital == [f"{name}[{slot}]" for slot in range(experts)]
        assert control.digital_weights() == experts * out_dim * in_dim
        control.remove()
    loaded, _ = romer.load_model(str(tmp_path / "hpd"))
    carried = romer.load_calibration(loaded, tmp_path / "hpd")
    with apply_noise_(loaded, config, seed=3, calibration=carried):
        assert torch.equal(logits(loaded), expected)
    from romer.calibration.persist import apply_record, read_record

    with apply_noise_(model, config, seed=3) as chip:  # the record installed on a chip already programmed
        installed = apply_record(model, read_record(tmp_path / "hpd"), chip=chip, with_replacements=False)
        assert installed.decomposed == sorted(f"{name}[{slot}]" for slot in range(experts))
        assert torch.equal(logits(model), expected)


def test_a_slot_that_does_not_exist_or_holds_outliers_is_refused_in_one_line():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        with pytest.raises(romer.RomerError, match="slot 8 does not exist"):
            chip.decompose(DOWN, slot=8)
        with pytest.raises(romer.RomerError, match="not a fused expert tensor"):
            chip.decompose("model.layers.0.self_attn.o_proj.weight", slot=0)
        chip.split_outliers(DOWN, 0.01)
        with pytest.raises(romer.RomerError, match="holds outliers"):
            chip.decompose(DOWN, slot=0)
