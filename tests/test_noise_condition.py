"""One chip, many moments: the same chip instance read at another time and temperature keeps its programming errors,
drift exponents and periphery draws; only what the moment changes moves."""

from __future__ import annotations

import math

import numpy as np
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
    # the chip programmed at that moment, its read noise anchored where it stood before the move
    anchored = config if moment.time_s is None else NoiseConfig.preset(preset, read_anchor_s=config.drift_time_s)
    with apply_noise_(model, anchored, seed=3, at=moment):
        there = logits(model), weights(model)
    with apply_noise_(model, anchored, seed=3, at=moment):  # the same seed at the same moment: the same bits
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


def test_read_noise_renews_after_the_anchor_and_is_unchanged_at_it():
    """Issue 43: a read at t keeps the noise sampled at the anchor a and adds an independent increment of variance
    σ(t)² − σ(a)² (per device, relative to |g|·Q_s); reads at a are the same bits as without an anchor."""
    from scipy import stats

    from romer.noise.devices import AccumulatedReadNoise

    n, level = 200_000, 10.0
    g = torch.full((n,), level, dtype=torch.float64)
    a, t = 3600.0, 365 * 86400.0
    plain = AccumulatedReadNoise(25.0, a, 20.0, True)
    anchored_at_a = AccumulatedReadNoise(25.0, a, 20.0, True, anchor_s=a)
    later = AccumulatedReadNoise(25.0, t, 20.0, True, anchor_s=a)
    frozen = AccumulatedReadNoise(25.0, t, 20.0, True)  # the former model: the same ε scaled to t
    stream = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    at_a = plain.apply(g, stream(1))
    assert torch.equal(anchored_at_a.apply(g, stream(1)), at_a)
    renewed = later.apply(g, stream(1), stream(2))
    q_s = min(0.0088 / (level / 25.0) ** 0.65, 0.2)
    increment = ((renewed - at_a) / (level * q_s)).numpy()
    expected = math.sqrt(later.log_term(t) - later.log_term(a))
    assert abs(increment.std() / expected - 1) < 0.01 and abs(increment.mean()) < 0.01
    assert stats.kstest(increment / expected, "norm").pvalue > 1e-3
    # the reads at a and at t correlate as sqrt(σ(a)²/σ(t)²), not 1 as a frozen draw would
    base, now = (at_a - level).numpy(), (renewed - level).numpy()
    correlation = np.corrcoef(base, now)[0, 1]
    assert abs(correlation - math.sqrt(later.log_term(a) / later.log_term(t))) < 0.01
    assert np.corrcoef(base, (frozen.apply(g, stream(1)) - level).numpy())[0, 1] > 0.999
    assert torch.equal(later.apply(g, stream(1), stream(2)), renewed)  # the same streams, the same bits


def test_a_read_before_the_anchor_is_refused_from_the_library():
    model = build("olmoe")
    with apply_noise_(model, NoiseConfig.preset("pcm"), seed=0) as chip:
        chip.move_to(Condition(time_s=86400))
        with pytest.raises(RomerError, match="before this chip's read anchor"):
            chip.move_to(Condition(time_s=60))
