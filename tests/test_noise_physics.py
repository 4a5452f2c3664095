"""The device physics does what its docstrings say, measured on ≥ 10⁶ samples."""

import math

import pytest
import torch

from romer.noise.analog import quantize
from romer.noise.devices import AccumulatedReadNoise, PowerLawDrift, ProgrammingNoise, TemperatureShift
from romer.noise.mapping import ConductanceMapping
from romer.noise.streams import stream

N = 1_000_000


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_constant_programming_sigma_within_3_percent():
    noise = ProgrammingNoise(g_max_us=25.0, sigma_dev=0.05)
    g = torch.full((N,), 12.5)
    delta = noise.apply(g, rng()) - g
    assert delta.std().item() / 25.0 == pytest.approx(0.05, rel=0.03)
    assert abs(delta.mean().item()) < 0.01


def test_polynomial_programming_sigma_follows_the_level():
    coeffs = (0.26348, 1.9650, -1.1731)
    noise = ProgrammingNoise(g_max_us=25.0, coeffs_us=coeffs)
    for level in (10.0, 25.0):
        g = torch.full((N,), level)
        expected = sum(c * (level / 25.0) ** i for i, c in enumerate(coeffs))
        assert (noise.apply(g, rng()) - g).std().item() == pytest.approx(expected, rel=0.03)


def test_no_negative_conductance():
    noise = ProgrammingNoise(g_max_us=25.0, sigma_dev=0.2)
    assert noise.apply(torch.zeros(N), rng()).min().item() == 0.0


def test_temperature_mean_shift_and_spread_follow_the_formula():
    effect = TemperatureShift(temperature_c=80.0, reference_c=25.0, shift_per_c=-0.002, spread_per_c=0.001)
    g = torch.full((N,), 20.0)
    ratio = effect.apply(g, rng()) / g
    assert ratio.mean().item() == pytest.approx(1 - 0.002 * 55, abs=5e-4)
    assert ratio.std().item() == pytest.approx(0.001 * 55, rel=0.03)


def test_temperature_without_spread_is_exact_and_inactive_at_reference():
    g = torch.rand(1000) * 25
    shifted = TemperatureShift(85.0, 25.0, -0.001, 0.0).apply(g, rng())
    assert torch.allclose(shifted, g * (1 - 0.001 * 60))
    assert not TemperatureShift(25.0, 25.0, -0.001, 0.001).active


def test_power_law_drift_with_fixed_exponent():
    g = torch.rand(1000) * 25
    drift = PowerLawDrift(g_max_us=25.0, time_s=3600.0, t0_s=20.0, model="constant", nu_mean=0.05, nu_std=0.0)
    assert torch.allclose(drift.apply(g, rng()), g * ((3600 + 20) / 20) ** -0.05)


def test_pcm_drift_exponent_statistics_at_g_max():
    drift = PowerLawDrift(g_max_us=25.0, time_s=3600.0, t0_s=20.0, model="pcm")
    nu = drift.exponents(torch.full((N,), 25.0), rng())
    # at g = g_max: mean clipped to 0.049, std clipped to 0.008 (|ν| changes nothing this far from 0)
    assert nu.mean().item() == pytest.approx(0.049, rel=0.01)
    assert nu.std().item() == pytest.approx(0.008, rel=0.03)


def test_accumulated_read_noise_std():
    read = AccumulatedReadNoise(g_max_us=25.0, time_s=3600.0, t0_s=20.0, enabled=True)
    g = torch.full((N,), 25.0)
    expected = 0.0088 * math.sqrt(math.log((3620 + 250e-9) / (2 * 250e-9)))
    assert ((read.apply(g, rng()) - g) / g).std().item() == pytest.approx(expected, rel=0.03)


def test_quantize_hits_only_the_configured_levels():
    values = torch.linspace(-1.3, 1.3, 10001)
    for bits in (1, 2, 4, 8):
        q = quantize(values, bits)
        levels = 2 ** (bits - 1) - 1
        grid = torch.tensor([-1.0, 1.0]) if levels == 0 else torch.arange(-levels, levels + 1) / levels
        assert torch.isin(q, grid).all()
        assert len(q.unique()) == len(grid)


def test_tile_and_column_scales():
    weight = torch.zeros(4, 6)
    weight[0, 0], weight[1, 4], weight[3, 5] = 2.0, -5.0, 1.0
    tile = ConductanceMapping(tile_rows=4, tile_cols=2, g_max_us=10.0, per_column=False)
    column = ConductanceMapping(tile_rows=4, tile_cols=2, g_max_us=10.0, per_column=True)
    # inputs split 0-3 | 4-5, outputs split 0-1 | 2-3
    assert torch.allclose(tile.scales(weight), torch.tensor([[0.2, 0.5], [0.2, 0.5], [1.0, 0.1], [1.0, 0.1]]))
    assert torch.allclose(column.scales(weight), torch.tensor([[0.2, 1.0], [1.0, 0.5], [1.0, 1.0], [1.0, 0.1]]))
    g_pos, g_neg = column.to_conductances(weight, column.scales(weight))
    assert g_pos.max() == 10.0 and g_neg.max() == 10.0 and (g_pos * g_neg == 0).all()
    assert torch.equal(column.to_weights(g_pos, g_neg, column.scales(weight)), weight)


def test_streams_depend_only_on_their_key():
    a = torch.randn(5, generator=stream(3, "layers.0.w", 2))
    b = torch.randn(5, generator=stream(3, "layers.0.w", 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.randn(5, generator=stream(3, "layers.0.w", 1)))
    assert not torch.equal(a, torch.randn(5, generator=stream(4, "layers.0.w", 2)))


def test_leakage_grows_with_temperature_and_has_lognormal_spread():
    effect = TemperatureShift(80.0, 25.0, 0.0, 0.0, leak_ref_us=0.025, leak_doubling_c=10.0, leak_spread=0.5)
    extra = 0.025 * (2 ** 5.5 - 1)
    assert effect.leakage_us() == pytest.approx(0.025 * 2 ** 5.5)
    leak = effect.apply(torch.zeros(N), rng())
    assert leak.mean().item() == pytest.approx(extra, rel=0.01)
    assert (leak.std() / leak.mean()).item() == pytest.approx(math.sqrt(math.exp(0.25) - 1), rel=0.03)


def test_global_compensation_removes_a_mean_shift_but_not_the_spread():
    from romer.noise import NoiseConfig
    from romer.noise.physics import DevicePhysics

    weight = torch.randn(64, 300)
    shift_only = DevicePhysics.from_config(NoiseConfig(temperature_c=80.0, temp_shift_per_c=-0.002))
    restored, _ = shift_only.program(weight, rng())
    assert torch.allclose(restored, weight, atol=1e-5)
    uncompensated = DevicePhysics.from_config(NoiseConfig(temperature_c=80.0, temp_shift_per_c=-0.002,
                                                          drift_compensation=False))
    assert torch.allclose(uncompensated.program(weight, rng())[0], weight * (1 - 0.002 * 55), atol=1e-5)
    spread = DevicePhysics.from_config(NoiseConfig(temperature_c=80.0, temp_spread_per_c=0.002))
    assert not torch.allclose(spread.program(weight, rng())[0], weight, atol=1e-3)
