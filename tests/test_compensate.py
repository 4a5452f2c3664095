"""The field's data-free remedy, aihwkit's drift compensation read out with one-hot inputs: per column and global."""

from __future__ import annotations

import pytest
import torch

import romer
from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from tests.families import build

GAINS = NoiseConfig.preset("ideal", adc_gain_sigma=0.2, tile_cols=8)  # every column's ADC with its own gain error


def ids(seed: int = 0, tokens: int = 64 * 4) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(5).view(-1, 64)).logits


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "mixtral"])
def test_per_column_compensation_undoes_column_gains_and_global_cannot(family):
    model = build(family)
    clean = logits(model)
    with apply_noise_(model, GAINS, seed=1):
        noisy = logits(model)
        errors = {}
        for method in ("compensate", "compensate-global"):
            calibration = calibrate_(model, CalibrationConfig(method=method), ids())
            errors[method] = float((logits(model) - clean).norm())
            calibration.remove()
            assert torch.equal(logits(model), noisy)  # undone exactly
    before = float((noisy - clean).norm())
    assert errors["compensate"] < 0.05 * before  # a column's gain is what its one-hot read-out sees
    assert errors["compensate-global"] > 0.5 * before  # one gain per matrix cannot undo per-column gains


def test_the_digital_share_is_counted_exactly():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        for method, per_column in (("compensate", True), ("compensate-global", False)):
            calibration = calibrate_(model, CalibrationConfig(method=method), ids())
            report = calibration.report["compensate"]
            expected = sum((chip.shape(n)[0] if len(chip.shape(n)) == 3 else 1) * (chip.shape(n)[-2] if per_column
                                                                                      else 1)
                           for n in chip.on_chip_names())
            assert report["parameters_added"] == expected == calibration.digital_weights()
            assert report["digital_share"] == pytest.approx(expected / chip.on_chip_parameters)
            assert sorted(calibration.corrections) == sorted(chip.on_chip_names())
            calibration.remove()


def test_compensation_reads_no_calibration_text():
    model = build("olmoe")
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(1), with_kwargs=True)
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0):
        calibrate_(model, CalibrationConfig(method="compensate"), ids()).remove()
    assert seen == []


def test_compensation_saves_and_reloads_bit_for_bit(tiny_moe_dir, tmp_path):
    from romer.calibration.persist import save_calibrated

    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3):
        calibration = calibrate_(model, CalibrationConfig(method="compensate"), ids())
        expected = logits(model)
        save_calibrated(model, tokenizer, calibration, tmp_path / "compensated")
        calibration.remove()
    loaded, _ = romer.load_model(str(tmp_path / "compensated"))
    carried = romer.load_calibration(loaded, tmp_path / "compensated")
    with apply_noise_(loaded, config, seed=3, calibration=carried):
        assert torch.equal(logits(loaded), expected)
