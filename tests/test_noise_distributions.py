"""Every effect in romer/noise has the distribution its docstring promises, at fixed seeds: sample moments
within their confidence bounds and a Kolmogorov–Smirnov test against the documented law; an effect
switched off changes nothing; `strength` scales exactly the spreads it says it scales.
(The periphery's effects are checked the same way in test_noise_periphery.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from romer.noise import NoiseConfig
from romer.noise.analog import TileProgram, analog_linear
from romer.noise.devices import AccumulatedReadNoise, PowerLawDrift, ProgrammingNoise, TemperatureShift
from romer.noise.physics import DevicePhysics

N = 400_000
P_MIN = 1e-3  # a KS p-value below this at a fixed seed would be a failure, not chance


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check(sample: torch.Tensor, law, mean: float, std: float) -> None:
    """Moments within 4 standard errors, and KS against `law` (a frozen scipy distribution)."""
    values = sample.double().flatten()
    n = values.numel()
    assert abs(values.mean().item() - mean) < 4 * std / math.sqrt(n)
    kurtosis = law.stats(moments="k")
    se_std = std * math.sqrt((float(kurtosis) + 2) / (4 * (n - 1)))  # standard error of the sample std
    assert abs(values.std().item() - std) < 4 * se_std
    assert stats.kstest(values.numpy(), law.cdf).pvalue > P_MIN


def test_constant_programming_noise_is_normal_in_conductance():
    g = torch.full((N,), 12.5)
    delta = ProgrammingNoise(25.0, sigma_dev=0.05).apply(g, rng()) - g
    sigma = 0.05 * 25.0
    check(delta, stats.norm(0, sigma), 0.0, sigma)


@pytest.mark.parametrize("level", [10.0, 25.0])
def test_polynomial_programming_noise_is_normal_with_the_level_dependent_sigma(level):
    coeffs = (0.26348, 1.9650, -1.1731)
    sigma = sum(c * (level / 25.0) ** i for i, c in enumerate(coeffs))
    g = torch.full((N,), level)
    delta = ProgrammingNoise(25.0, coeffs_us=coeffs).apply(g, rng(1)) - g
    check(delta, stats.norm(0, sigma), 0.0, sigma)


def test_the_idle_device_of_a_pair_errs_only_upwards_as_a_half_normal():
    noisy = ProgrammingNoise(25.0, sigma_dev=0.05).apply(torch.zeros(N), rng(2))
    sigma = 1.25
    assert (noisy >= 0).all()
    assert (noisy == 0).double().mean().item() == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(N))
    positive = noisy[noisy > 0]
    law = stats.halfnorm(scale=sigma)
    check(positive, law, law.mean(), law.std())


def test_temperature_ratio_is_normal_around_the_mean_shift():
    effect = TemperatureShift(80.0, 25.0, shift_per_c=-0.002, spread_per_c=0.001)
    g = torch.full((N,), 20.0)
    ratio = effect.apply(g, rng(3)) / g
    check(ratio, stats.norm(1 - 0.11, 0.055), 1 - 0.11, 0.055)


def test_leakage_is_lognormal_with_the_documented_mean():
    effect = TemperatureShift(80.0, 25.0, 0.0, 0.0, leak_ref_us=0.025, leak_doubling_c=10.0, leak_spread=0.5)
    extra = 0.025 * (2 ** 5.5 - 1)
    leak = effect.apply(torch.zeros(N), rng(4))
    law = stats.lognorm(s=0.5, scale=extra * math.exp(-0.125))  # exp(s·ε − s²/2)·extra
    check(leak, law, extra, law.std())


def test_constant_drift_exponents_are_normal_and_pcm_exponents_follow_the_level():
    constant = PowerLawDrift(25.0, 3600.0, 20.0, "constant", nu_mean=0.06, nu_std=0.01)
    nu = constant.exponents(torch.full((N,), 10.0), rng(5))
    check(nu, stats.norm(0.06, 0.01), 0.06, 0.01)
    pcm = PowerLawDrift(25.0, 3600.0, 20.0, "pcm")
    level = 5.0  # ln(0.2): μ = −0.0155·ln(0.2) + 0.0244 ≈ 0.0493, σ = −0.0125·ln(0.2) − 0.0059 ≈ 0.0142
    mean = min(max(-0.0155 * math.log(0.2) + 0.0244, 0.049), 0.1)
    std = min(max(-0.0125 * math.log(0.2) - 0.0059, 0.008), 0.045)
    nu = pcm.exponents(torch.full((N,), level), rng(6))
    law = stats.foldnorm(mean / std, scale=std)  # |N(μ, σ)|
    check(nu, law, law.mean(), law.std())


def test_accumulated_read_noise_is_normal_and_relative_to_the_conductance():
    read = AccumulatedReadNoise(25.0, 3600.0, 20.0, enabled=True)
    g = torch.full((N,), 25.0)
    sigma = 0.0088 * math.sqrt(math.log((3620 + 250e-9) / (2 * 250e-9)))
    check((read.apply(g, rng(7)) - g) / g, stats.norm(0, sigma), 0.0, sigma)


def program(config: NoiseConfig, scales_value: float = 0.02, out_dim: int = 200, in_dim: int = 100,
            seed: int = 0) -> TileProgram:
    scales = torch.full((out_dim, 1), scales_value)
    return TileProgram("w", config, seed, scales)


def test_per_forward_read_noise_is_normal_with_sqrt2_sigma_per_weight():
    """Each weight is a pair of devices reading with σ = read_sigma·g_max each: √2·σ·g_max µS per weight."""
    config = NoiseConfig(read_sigma=0.02, tile_rows=256)
    weight = torch.zeros(300, 200)
    tile = program(config, 0.01, 300, 200)
    noisy = analog_linear(torch.eye(200), weight, None, tile, None).t()  # x = I: y = Wᵀ, one weight per entry
    sigma = math.sqrt(2) * 0.02 * 25.0 * 0.01
    check(noisy, stats.norm(0, sigma), 0.0, sigma)
    again = analog_linear(torch.eye(200), weight, None, tile, None).t()
    assert not torch.equal(noisy, again)  # fresh every forward


def test_adc_noise_is_normal_in_adc_units_before_rounding():
    """Analog mode, converters fine enough that rounding is negligible: the output error of one token is
    σ_ADC·U in tile-product units, times the column's weight scale and the token's input scale."""
    config = NoiseConfig(mode="analog", sigma_adc=0.01, dac_bits=24, adc_bits=24, adc_full_scale=8.0)
    weight = torch.zeros(4000, 100)
    tile = program(config, 0.02, 4000, 100)
    x = torch.ones(50, 100) * 0.5
    y = analog_linear(x, weight, None, tile, None)
    sigma = 0.01 * 8.0 * 0.02 * 25.0 * 0.5
    check(y, stats.norm(0, sigma), 0.0, sigma)


def test_effects_switched_off_change_nothing():
    weight = torch.randn(64, 300, generator=rng(8))
    ideal, _ = DevicePhysics.from_config(NoiseConfig()).program(weight, rng(9))
    assert torch.equal(ideal, weight)
    zeroed = NoiseConfig(sigma_dev=0.0, temperature_c=80.0, temp_shift_per_c=0.0, temp_spread_per_c=0.0,
                         leak_ref_us=0.0, read_sigma=0.0, sigma_adc=0.0, adc_offset_sigma=0.0, adc_gain_sigma=0.0,
                         ir_drop=0.0)
    physics = DevicePhysics.from_config(zeroed)
    assert not physics.perturbs_weights and not physics.periphery.per_forward
    assert torch.equal(physics.program(weight, rng(9))[0], weight)
    x = torch.randn(10, 300, generator=rng(10))
    tile = TileProgram("w", zeroed, 0, physics.mapping.scales(weight))
    assert torch.equal(analog_linear(x, weight, None, tile, None), torch.nn.functional.linear(x, weight))


@pytest.mark.parametrize("fields", [
    dict(sigma_dev=0.03),                                                    # programming, constant
    dict(temperature_c=80.0, temp_spread_per_c=0.001),                       # temperature spread (no mean shift)
    dict(drift_nu="constant", drift_time_s=3600.0, nu_mean=0.0, nu_std=0.02),  # drift-exponent spread
])
def test_strength_scales_the_spread_of_each_effect(fields):
    """The same draws, k times the spread: (noisy − clean) at strength 2 is twice that at strength 1 wherever
    no device was clamped at zero conductance (weights far from zero here, compensation off)."""
    weight = 1.0 + torch.rand(32, 128, generator=rng(11))  # all positive: one device per pair, far from 0
    results = []
    for k in (1.0, 2.0):
        config = NoiseConfig(strength=k, drift_compensation=False, scaling="tile", **fields)
        noisy, _ = DevicePhysics.from_config(config).program(weight, rng(12))
        results.append(noisy - weight)
    if "drift_nu" in fields:  # g·(t/t0)^(−|ν|): the exponents scale, so log-ratios do
        base = math.log((3600 + 20) / 20)
        logs = [torch.log1p(r / weight) / -base for r in results]
        assert torch.allclose(logs[1], 2 * logs[0], rtol=1e-3, atol=1e-6)
    else:
        assert torch.allclose(results[1], 2 * results[0], rtol=1e-4, atol=1e-6)


def test_strength_scales_read_and_adc_noise_exactly():
    weight = torch.zeros(100, 50)
    x = torch.ones(3, 50)
    outputs = []
    for k in (1.0, 3.0):
        config = NoiseConfig(mode="analog", read_sigma=0.01, sigma_adc=0.005, dac_bits=24, adc_bits=24, strength=k)
        outputs.append(analog_linear(x, weight, None, program(config, 0.01, 100, 50), None))
    assert torch.allclose(outputs[1], 3 * outputs[0], rtol=1e-3, atol=1e-7)


def test_strength_leaves_deterministic_effects_alone():
    """A pure mean shift with global compensation is undone whatever the strength (strength scales spreads)."""
    weight = torch.randn(64, 300, generator=rng(13))
    for k in (0.5, 2.0):
        config = NoiseConfig(temperature_c=80.0, temp_shift_per_c=-0.002, strength=k)
        assert torch.allclose(DevicePhysics.from_config(config).program(weight, rng(14))[0], weight, atol=1e-5)


def test_retention_loss_is_normal_around_rho_times_the_decades_and_heat_adds_decades():
    from romer.noise.devices import Retention

    year = 365 * 86400.0
    cool = Retention(year, 1.0, per_decade=0.004, spread=0.5, relax_us=0.0, temperature_c=25.0, reference_c=25.0,
                     ea_ev=1.1)
    decades = math.log10(1 + year)
    assert cool.decades() == pytest.approx(decades)
    g = torch.full((N,), 20.0)
    ratio = cool.apply(g, rng(11)) / g
    mean, std = 1 - 0.004 * decades, 0.004 * decades * 0.5
    check(ratio, stats.norm(mean, std), mean, std)
    hot = Retention(year, 1.0, 0.004, 0.5, 0.0, temperature_c=80.0, reference_c=25.0, ea_ev=1.1)
    speedup = math.exp(1.1 / 8.617333262e-5 * (1 / 298.15 - 1 / 353.15))  # Arrhenius, ≈ 770×
    assert hot.decades() == pytest.approx(math.log10(1 + year * speedup / 1.0))
    assert not Retention(0.0, 1.0, 0.004, 0.5, 1.0, 80.0, 25.0, 1.1).active


def test_relaxation_is_a_random_walk_in_the_square_root_of_the_decades():
    from romer.noise.devices import Retention

    effect = Retention(3600.0, 1.0, per_decade=0.0, spread=0.0, relax_us=0.8, temperature_c=25.0, reference_c=25.0,
                       ea_ev=1.1)
    g = torch.full((N,), 20.0)  # far from 0: the clamp never acts
    delta = effect.apply(g, rng(12)) - g
    sigma = 0.8 * math.sqrt(math.log10(1 + 3600.0))
    check(delta, stats.norm(0, sigma), 0.0, sigma)


def test_retention_moves_only_with_time_and_keeps_the_programming_errors():
    """The same chip read later: programming draws and everything else equal; only the time terms move."""
    config = NoiseConfig(sigma_dev=0.05, retention_per_decade=0.004, retention_spread=0.5, relax_us_per_decade=0.5,
                         drift_compensation=False)
    weight = torch.randn(64, 64, generator=rng(13))
    from romer.noise.streams import stream

    def programmed(time_s):
        physics = DevicePhysics.from_config(config.model_copy(update={"drift_time_s": time_s}))
        return physics.program(weight, lambda effect: stream(0, "w", effect))[0]

    fresh, later = programmed(0.0), programmed(30 * 86400.0)
    assert torch.equal(fresh, programmed(0.0)) and torch.equal(later, programmed(30 * 86400.0))
    assert not torch.equal(fresh, later)
    errors = torch.stack([(fresh - weight).flatten(), (later - weight).flatten()])
    assert torch.corrcoef(errors)[0, 1] > 0.5  # the programming errors stay; the time terms come on top
