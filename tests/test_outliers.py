"""outliers and outlier-retune (ours): each scale segment's largest weights in digital units, the rest programmed."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

import romer
from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.calibration.persist import save_calibrated
from romer.noise.mapping import ConductanceMapping
from romer.noise.outliers import split_outliers
from romer.noise.physics import DevicePhysics
from romer.noise.streams import stream
from tests.families import build


def ids(seed: int = 0, tokens: int = 64 * 8) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(5, 64 * 4).view(-1, 64)).logits


@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("shape", [(300, 200), (64, 520), (17, 33)])
def test_the_split_adds_up_exactly_and_takes_each_segments_largest_weights(per_column, shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    weight[0, :5] = 0.0  # zeros never move
    mapping = ConductanceMapping(32, 16, 25.0, per_column)
    analog, digital = split_outliers(weight, 0.05, mapping)
    assert torch.equal(analog + digital.dense(), weight)
    moved = digital.dense() != 0
    assert torch.equal(analog[moved], torch.zeros(int(moved.sum())))
    for top in range(0, shape[0], 16):
        for left in range(0, shape[1], 32):
            rows = range(top, min(top + 16, shape[0])) if per_column else [slice(top, top + 16)]
            for row in rows:
                block, taken = weight[row, left:left + 32], moved[row, left:left + 32]
                floor = int(0.05 * block.numel())
                assert floor <= int(taken.sum()) <= floor + 1
                if taken.any():
                    assert block[taken].abs().min() >= block[~taken].abs().max()
    assert len(digital) == int(0.05 * weight.numel())
    assert torch.all(mapping.scales(analog) <= mapping.scales(weight))


def test_under_one_weight_per_column_the_outliers_go_where_they_lower_the_scale_most():
    weight = torch.rand(64, 256, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5  # every |w| in [0.5, 1)
    weight[3, 17], weight[40, 200] = 9.0, -5.0  # two columns whose range one weight sets
    _, digital = split_outliers(weight, 2 / weight.numel(), ConductanceMapping(256, 256, 25.0, per_column=True))
    assert sorted(digital.index.tolist()) == [3 * 256 + 17, 40 * 256 + 200]


def test_a_fraction_too_small_for_a_segment_moves_nothing():
    weight = torch.randn(8, 8)
    analog, digital = split_outliers(weight, 0.01, ConductanceMapping(8, 8, 25.0, per_column=False))
    assert len(digital) == 0 and analog is weight


def test_the_arrays_errors_shrink_with_their_scale_and_keep_their_distribution():
    """Programming noise is a share of g_max: a weight's error in weight units follows its tile's scale. The errors
    of the weights left on the arrays, over their scale, are the same distribution with or without the split; their
    std in weight units falls by the ratio of the scales."""
    config = NoiseConfig.preset("gaussian", scaling="tile", tile_rows=64, tile_cols=64)
    physics = DevicePhysics.from_config(config)
    generator = torch.Generator().manual_seed(0)
    weight = torch.rand(512, 512, generator=generator) * 2 - 1
    tiles = weight.view(8, 64, 8, 64)  # four outliers of ±3 in each 64 × 64 tile set its range
    for row, column in torch.randint(0, 64, (4, 2), generator=generator).tolist():
        tiles[:, row, :, column] = 3.0 * torch.sign(tiles[:, row, :, column])
    analog, digital = split_outliers(weight, 4 / 4096, physics.mapping)  # 4 per tile
    assert len(digital) == 4 * 64 and float(analog.abs().max()) < 1
    before, scales_before = physics.program(weight, stream(0, "w"))
    after, scales_after = physics.program(analog, stream(1, "w"))
    kept = digital.dense() == 0
    # devices clip at 0: compare weights whose conductance is clear of both ends under either mapping
    sigma = config.sigma_dev * config.g_max_us
    for scales in (physics.mapping.scales(weight), physics.mapping.scales(analog)):
        g = weight.abs() / physics.mapping.expand(scales, 512)
        kept &= (g > 4 * sigma) & (g < config.g_max_us - 4 * sigma)
    scale_before = physics.mapping.expand(scales_before, 512)
    scale_after = physics.mapping.expand(scales_after, 512)
    assert float(scale_after.mean()) < 0.4 * float(scale_before.mean())
    error_before, error_after = (before - weight)[kept], (after - analog)[kept]
    normalised_before = (error_before / scale_before[kept]).numpy()
    normalised_after = (error_after / scale_after[kept]).numpy()
    assert stats.ks_2samp(normalised_before, normalised_after).pvalue > 0.01
    expected = float(scale_after[kept].pow(2).mean().sqrt() / scale_before[kept].pow(2).mean().sqrt())
    assert float(error_after.pow(2).mean().sqrt() / error_before.pow(2).mean().sqrt()) == pytest.approx(expected,
                                                                                                        rel=0.05)
    assert int(kept.sum()) > 10000


def test_the_tile_level_path_adds_the_digital_part_once_outside_the_adcs():
    """Analog mode with converters fine enough to be exact and no noise: the products equal the clean model's, with
    the outliers split or not (a digital part lost, or passed through the tiles twice, would show)."""
    model = build("mixtral")
    clean = logits(model)
    config = NoiseConfig.preset("ideal", mode="analog", dac_bits=24, adc_bits=24, adc_full_scale=64.0)
    with apply_noise_(model, config, seed=0) as chip:
        for name in chip.names():
            chip.split_outliers(name, 0.05)
        assert chip.outlier_weights() > 0
        torch.testing.assert_close(logits(model), clean, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe"])
def test_fused_experts_with_outliers_equal_the_eager_path(family):
    model = build(family)
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=4.0)
    with torch.no_grad(), apply_noise_(model, config, seed=2) as chip:
        for name in chip.names():
            chip.split_outliers(name, 0.01)
        assert chip.experts_path() == "fused, offsets per expert"
        fused = logits(model)
        chip.use_eager_experts()
        eager = logits(model)
    assert torch.allclose(fused, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))


@pytest.mark.parametrize("family", ["olmoe", "deepseek_v2"])
def test_outliers_count_two_numbers_each_undo_exactly_and_repeat_bit_for_bit(family):
    model = build(family)
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=1) as chip:
        noisy = logits(model)
        calibration = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.01), ids())
        count = chip.outlier_weights()
        assert count == calibration.report["outliers"]["weights"] > 0
        assert calibration.digital_weights() == 2 * count
        assert calibration.digital_share() == pytest.approx(2 * count / chip.total_parameters)
        assert 0.5 * 0.02 < calibration.digital_share() <= 0.02
        split = logits(model)
        assert not torch.equal(split, noisy)
        calibration.remove()
        assert chip.outlier_weights() == 0
        assert torch.equal(logits(model), noisy)
        again = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.01), ids())
        assert torch.equal(logits(model), split)
        again.remove()


def test_role_fractions_keep_the_count_and_give_attention_its_factor():
    from romer.calibration.methods.outliers import role_fractions

    sizes = {"q": 1000, "o": 1000, "experts": 8000}
    roles = {"q": "attention", "o": "attention", "experts": "experts"}
    for factor in (1.0, 2.0, 4.0, 8.0):
        shares = role_fractions(sizes, roles, 0.01, factor)
        assert sum(shares[n] * sizes[n] for n in sizes) == pytest.approx(0.01 * 10000)
        assert shares["q"] == shares["o"] == pytest.approx(factor * shares["experts"])
    assert role_fractions(sizes, roles, 0.01, 1.0) == {n: 0.01 for n in sizes}
    assert role_fractions(sizes, roles, 0.2, 1000.0)["q"] == 0.49  # capped: a tensor keeps most of its weights


def test_outliers_weight_attention_as_asked_and_choose_its_factor_on_held_out_text():
    from romer.calibration.methods.outliers import OUTLIER_ATTENTION_GRID

    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=1) as chip:
        uniform = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.02), ids())
        even = {name: chip.outlier_weights(name) for name in chip.on_chip_names()}
        uniform.remove()
        weighted = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.02,
                                                       outlier_attention=4.0), ids())
        moved = {name: chip.outlier_weights(name) for name in chip.on_chip_names()}
        attention = [n for n in moved if chip.role(n) == "attention"]
        others = [n for n in moved if chip.role(n) != "attention"]
        assert sum(moved[n] for n in attention) > 2 * sum(even[n] for n in attention)
        assert sum(moved[n] for n in others) < sum(even[n] for n in others)
        assert sum(moved.values()) == pytest.approx(sum(even.values()), rel=0.1)  # the same count, to the floors
        weighted.remove()
        chosen = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.02, outlier_attention=None),
                            ids(tokens=64 * 16))
        tried = chosen.report["outliers"]["held_out_ppl"]
        assert list(tried) == list(OUTLIER_ATTENTION_GRID)
        assert chosen.report["outliers"]["attention"] == min(tried, key=tried.get)
        searched, placed = logits(model), chosen.outliers
        chosen.remove()
        assert chip.outlier_weights() == 0
        direct = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.02,
                                                     outlier_attention=chosen.report["outliers"]["attention"]), ids())
        assert torch.equal(logits(model), searched)  # the search ends where a direct split at its choice does
        assert direct.outliers == placed
        direct.remove()


def test_the_search_programs_each_tensor_once_per_candidate(monkeypatch):
    from romer.calibration.methods.outliers import OUTLIER_ATTENTION_GRID
    from romer.noise.chip import ChipHandle

    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=1) as chip:
        clean_logits = logits(model)
        calls = []
        original = ChipHandle.split_outliers
        monkeypatch.setattr(ChipHandle, "split_outliers", lambda self, name, f: (calls.append(name),
                                                                                 original(self, name, f))[1])
        chosen = calibrate_(model, CalibrationConfig(method="outliers", outlier_fraction=0.02, outlier_attention=None),
                            ids(tokens=64 * 16))
        tensors = len([n for n in chip.on_chip_names() if n not in chip.decomposed_names()])
        best_is_last = chosen.report["outliers"]["attention"] == OUTLIER_ATTENTION_GRID[-1]
        assert len(calls) == tensors * (len(OUTLIER_ATTENTION_GRID) + (0 if best_is_last else 1))
        calls.clear()
        chosen.remove()
        assert len(calls) == tensors and chip.outlier_weights() == 0  # one undo: each tensor programmed once more
        assert torch.equal(logits(model), clean_logits)


def test_outliers_do_nothing_on_the_clean_model():
    model = build("olmoe")
    clean = logits(model)
    calibration = calibrate_(model, CalibrationConfig(method="outliers"), ids())
    assert calibration.digital_weights() == 0 and torch.equal(logits(model), clean)


def test_outlier_retune_fits_within_its_share_and_saves_and_reloads_bit_for_bit(tiny_moe_dir, tmp_path):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3) as chip:
        noisy = logits(model)
        calibration = calibrate_(model, CalibrationConfig(method="outlier-retune", outlier_fraction=0.01,
                                                          retune_steps=4, retune_eval_every=2), ids(tokens=64 * 16))
        assert chip.outlier_weights() > 0 and calibration.corrections
        chosen = calibration.report["outliers"]  # by default it chooses attention's share on held-out text
        assert chosen["attention"] == min(chosen["held_out_ppl"], key=chosen["held_out_ppl"].get)
        share = calibration.digital_share()
        corrections = sum(c.stored_parameters for c in calibration.corrections.values())
        norms = sum(p.numel() for p, _ in calibration.norms.values())
        biases = sum(t.bias.numel() for t in calibration.transforms.values() if t.bias is not None)
        assert calibration.digital_weights() == 2 * chip.outlier_weights() + corrections + norms + biases
        assert share <= 0.02 + 0.005
        expected = logits(model)
        save_calibrated(model, tokenizer, calibration, tmp_path / "outlier-retune")
        calibration.remove()
        assert torch.equal(logits(model), noisy)
    loaded, _ = romer.load_model(str(tmp_path / "outlier-retune"))
    carried = romer.load_calibration(loaded, tmp_path / "outlier-retune")
    with apply_noise_(loaded, config, seed=3, calibration=carried):
        assert torch.equal(logits(loaded), expected)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe"])
def test_fused_experts_with_column_corrections_equal_the_eager_path_gradients_included(family):
    """retune's per-column gain and offset on a fused expert tensor keep the grouped kernel (issue 42: the eager path
    made the block-wise fit of one OLMoE-1B-7B layer take 502 s); an adapter on it still takes the eager path."""
    from romer.noise.digital import ColumnCorrection

    model = build(family)
    with apply_noise_(model, NoiseConfig.preset("cim-80c", adc_offset_sigma=4.0), seed=2) as chip:
        fused_names = [n for n in chip.names() if len(chip.shape(n)) == 3]
        corrections = {}
        for name in fused_names:
            slots, out_dim, in_dim = chip.shape(name)
            correction = ColumnCorrection(out_dim, in_dim, slots)
            with torch.no_grad():
                correction.gain.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
                correction.offset.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
            chip.attach_correction(name, correction)
            corrections[name] = correction
        assert chip.experts_path() == "fused, offsets per expert"

        def run():
            for c in corrections.values():
                c.zero_grad()
            out = model(input_ids=ids(5, 64 * 4).view(-1, 64)).logits
            out.float().pow(2).mean().backward()
            return out.detach(), [c.gain.grad.clone() for c in corrections.values()]

        fused, fused_grads = run()
        chip.use_eager_experts()
        eager, eager_grads = run()
        assert torch.allclose(fused, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))
        for a, b in zip(fused_grads, eager_grads):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * float(b.abs().max()))
        name = fused_names[0]
        slots, out_dim, in_dim = chip.shape(name)
        chip.attach_correction(name, ColumnCorrection(out_dim, in_dim, slots, rank=2))
        assert chip.experts_path() == "eager"
