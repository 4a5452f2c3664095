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


def test_the_probe_is_read_through_the_chip_periphery_not_the_stored_weights(tiny_moe_dir):
    """Issue 43: `compensate` reads its one-hot probe as a deployed chip would, through the column periphery: on a
    chip whose ADCs carry offsets each one-hot read adds its column's offset (the input scale of a one-hot row is 1),
    which a plain product with the stored weights misses."""
    import romer
    from romer.noise import NoiseConfig, apply_noise_

    model, _ = romer.load_model(str(tiny_moe_dir))
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0) as chip:
        name = next(n for n in chip.on_chip_names() if chip.role(n) == "attention")
        module, attribute = chip.module_of(name)
        stored = getattr(module, attribute).as_subclass(torch.Tensor)
        probe = torch.eye(stored.shape[1])
        difference = chip.read_out(name, None, probe) - torch.nn.functional.linear(probe, stored)
        assert difference.abs().max() > 0
        assert torch.allclose(difference, difference[0].expand_as(difference), atol=1e-6)  # one offset per column


def test_a_re_read_sets_the_gains_where_the_chip_stands_now(tiny_moe_dir):
    """`compensate`'s on_move: after the chip is read a year later, its gains are what a fresh read-out there gives."""
    import romer
    from romer import Condition
    from romer.calibration import get_method

    model, _ = romer.load_model(str(tiny_moe_dir))
    config = CalibrationConfig(method="compensate")
    with apply_noise_(model, NoiseConfig.preset("pcm-cim"), seed=0) as chip:
        calibration = calibrate_(model, config, ids(), chip=chip)
        name, correction = calibration.correction_items()[0]
        before = correction.gain.clone()
        chip.move_to(Condition.parse("1y@80C"))
        get_method("compensate").on_move(calibration, chip)
        after = correction.gain.clone()
        assert not torch.equal(before, after)
        calibration.remove()
        fresh = calibrate_(model, config, ids(), chip=chip)
        assert torch.equal(dict(fresh.correction_items())[name].gain, after)
