"""One chip, many moments: the same chip instance read at another time and temperature keeps its programming errors,
drift exponents and periphery draws; only what the moment changes moves."""

from __future__ import annotations

import pytest
import torch

from romer import CalibrationConfig, Condition, NoiseConfig, apply_noise_, calibrate_
from romer.errors import RomerError
from romer.noise.physics import DevicePhysics
from romer.noise.programming import program_matrix
from tests.families import build

HOUR, YEAR = 3600.0, 365 * 86400.0


def logits(model) -> torch.Tensor:
    ids = torch.randint(1, 128, (2, 64), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        return model(input_ids=ids).logits


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_a_condition_reads_as_time_and_temperature():
    assert Condition.parse("1h@25C") == Condition(time_s=HOUR, temperature_c=25)
    assert Condition.parse("1y@80C") == Condition(time_s=YEAR, temperature_c=80)
    assert Condition.parse("30d") == Condition(time_s=30 * 86400)
    assert Condition.parse("55C") == Condition(temperature_c=55)
    with pytest.raises(RomerError, match="cannot read the condition 'soon'"):
        Condition.parse("soon")


@pytest.mark.parametrize("preset, moment", [("pcm", Condition(time_s=YEAR)), ("pcm", Condition(time_s=86400)),
                                             ("cim-25c", Condition(temperature_c=80)),
                                             ("cim-80c", Condition(temperature_c=55))])
def test_moving_a_chip_is_the_chip_programmed_at_that_moment_bit_for_bit(preset, moment):
    config = NoiseConfig.preset(preset)
    model = build("olmoe")
    with apply_noise_(model, config, seed=3, at=moment):
        there = logits(model), weights(model)
    with apply_noise_(model, config, seed=3, at=moment):  # the same seed at the same moment: the same bits
        assert torch.equal(logits(model), there[0])
    with apply_noise_(model, config, seed=3) as chip:
        before = logits(model)
        chip.move_to(moment)
        assert torch.equal(logits(model), there[0])
        assert all(torch.equal(p, there[1][n]) for n, p in weights(model).items())
        assert not torch.equal(before, there[0])  # the moment did change the chip


def matrix_at(config: NoiseConfig, condition: Condition, seed: int = 5) -> torch.Tensor:
    target = torch.randn(64, 96, generator=torch.Generator().manual_seed(0))
    config = condition.applied_to(config)
    noisy, _, _ = program_matrix(DevicePhysics.from_config(config), config, target, seed, ("w",), "cpu")
    return noisy


def test_a_later_time_moves_only_the_drift():
    """With one drift exponent for every device, no compensation and no read noise, a later read of the same chip is
    the earlier one scaled by one factor: every programming error and temperature response is the same."""
    config = NoiseConfig.preset("pcm", drift_nu="constant", nu_mean=0.05, nu_std=0.0, read_1f=False,
                                drift_compensation=False, temperature_c=55, temp_spread_per_c=0.002)
    early, late = matrix_at(config, Condition(time_s=HOUR)), matrix_at(config, Condition(time_s=YEAR))
    factor = ((YEAR + 20) / (HOUR + 20)) ** -0.05
    torch.testing.assert_close(late, early * factor, rtol=1e-5, atol=1e-7)
    varied = NoiseConfig.preset("pcm", read_1f=False, drift_compensation=False)  # ν per device: drawn once
    ratio = matrix_at(varied, Condition(time_s=YEAR)) / matrix_at(varied, Condition(time_s=HOUR))
    again = matrix_at(varied, Condition(time_s=30 * 86400)) / matrix_at(varied, Condition(time_s=HOUR))
    # the same per-device exponents: log ratios at two times are proportional to log of the time ratios
    kept = (ratio > 0) & (again > 0) & (ratio != 1)
    scale = torch.log(torch.tensor((30 * 86400 + 20) / (HOUR + 20))) / torch.log(torch.tensor((YEAR + 20) / (HOUR + 20)))
    assert kept.sum() > 100  # a weight whose devices both drift keeps one exponent each; compare where one dominates
    close = (torch.log(again[kept]) - scale * torch.log(ratio[kept])).abs() < 1e-3
    assert close.float().mean() > 0.5


def test_heat_moves_only_the_temperature_terms():
    config = NoiseConfig.preset("gaussian", temp_shift_per_c=-0.002, drift_compensation=False)
    cool, hot = matrix_at(config, Condition(temperature_c=35)), matrix_at(config, Condition(temperature_c=80))
    torch.testing.assert_close(hot, cool * (1 - 0.002 * 55) / (1 - 0.002 * 10), rtol=1e-5, atol=1e-7)


def test_a_calibration_stays_installed_as_the_chip_ages_and_restore_is_exact():
    model = build("olmoe")
    clean = logits(model)
    with apply_noise_(model, NoiseConfig.preset("cim-25c"), seed=1) as chip:
        calibration = calibrate_(model, CalibrationConfig(method="compensate"), torch.arange(64 * 2))
        fitted = {n: c.gain.clone() for n, c in calibration.corrections.items()}
        chip.move_to(Condition(temperature_c=80))
        assert chip.condition()["temperature_c"] == 80
        assert all(torch.equal(chip.correction(n).gain, g) for n, g in fitted.items())  # fitted at 25 °C, kept
        aged = logits(model)
        calibration.remove()
        assert not torch.equal(logits(model), aged)
    assert torch.equal(logits(model), clean)
