import numpy as np
import pytest

from romer.errors import RomerError
from romer.noise import NoiseConfig, parse_noise_spec, preset_names
from romer.noise.fit import fit_noise


def test_registry_has_the_named_presets():
    assert {"ideal", "gaussian", "cim-25c", "cim-80c", "pcm", "reram"} <= set(preset_names())
    assert NoiseConfig.preset("cim-80c").temperature_c == 80 and NoiseConfig.preset("cim-25c").temperature_c == 25


def test_spec_overrides_and_yaml_round_trip(tmp_path):
    config = parse_noise_spec("cim-80c:sigma_dev=0.07,mode=analog,roles=experts+router")
    assert (config.sigma_dev, config.mode, config.roles) == (0.07, "analog", ("experts", "router"))
    path = tmp_path / "chip.yaml"
    path.write_text(config.to_yaml())
    assert parse_noise_spec(str(path)) == config
    assert parse_noise_spec(f"{path}:temperature_c=60").temperature_c == 60
    path.write_text("preset: pcm\ndrift_time_s: 86400\n")
    assert parse_noise_spec(str(path)) == NoiseConfig.preset("pcm", drift_time_s=86400)


@pytest.mark.parametrize("spec, message", [
    ("cim-99c", "unknown noise preset 'cim-99c'; choose one of ideal, gaussian"),
    ("gaussian:sigma_dev=-0.1", "noise field 'sigma_dev': Input should be greater than or equal to 0"),
    ("cim-80c:adc_bits=0", "noise field 'adc_bits'"),
    ("cim-80c:dac_bits=0", "noise field 'dac_bits'"),
    ("cim-80c:tile_rows=0", "noise field 'tile_rows'"),
    ("cim-80c:tile_cols=100000", "noise field 'tile_cols'"),
    ("cim-80c:sigma=0.1", "unknown noise field 'sigma'"),
    ("cim-80c:roles=experts+mlp", "unknown role 'mlp'"),
    ("cim-80c:sigma_dev", "cannot read 'sigma_dev'"),
    ("pcm:drift_time_s=0", "drift_nu is set but drift_time_s is 0"),
])
def test_bad_specs_name_the_field(spec, message):
    with pytest.raises(RomerError, match=message):
        parse_noise_spec(spec)


def test_bad_yaml_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("sigma_dev: [0.1\n")
    with pytest.raises(RomerError, match="is not valid YAML"):
        parse_noise_spec(str(broken))
    with pytest.raises(RomerError, match="cannot read noise file"):
        parse_noise_spec(str(tmp_path / "missing.yaml"))


def synthetic_measurements(path, coeffs=(0.3, 1.5, -0.8), shift=-0.002, spread=0.001, seed=0):
    rng = np.random.default_rng(seed)
    rows = ["target_us,measured_us,temperature_c"]
    for temperature in (25.0, 55.0, 85.0):
        target = rng.uniform(0, 25, 60_000)
        sigma = sum(c * (target / 25) ** i for i, c in enumerate(coeffs))
        programmed = target + sigma * rng.standard_normal(target.size)
        delta = temperature - 25.0
        measured = programmed * (1 + shift * delta + spread * delta * rng.standard_normal(target.size))
        rows += [f"{t:.6f},{m:.6f},{temperature}" for t, m in zip(target, measured)]
    path.write_text("\n".join(rows) + "\n")


def test_fit_recovers_known_parameters(tmp_path):
    path = tmp_path / "chip.csv"
    synthetic_measurements(path)
    config = fit_noise(path)
    sigma = lambda coeffs, g: sum(c * g**i for i, c in enumerate(coeffs))
    for g in (0.1, 0.5, 0.9):
        assert sigma(config.prog_coeffs_us, g) == pytest.approx(sigma((0.3, 1.5, -0.8), g), rel=0.05)
    assert config.g_max_us == pytest.approx(25, rel=1e-3)
    assert config.temp_shift_per_c == pytest.approx(-0.002, rel=0.05)
    assert config.temp_spread_per_c == pytest.approx(0.001, rel=0.1)
    assert config.reference_c == 25.0


@pytest.mark.parametrize("content, message", [
    ("target,measured\n1,2\n", "lacks column 'measured_us'"),
    ("target_us,measured_us\n1,abc\n", "column 'measured_us' is not a number"),
    ("target_us,measured_us\n1,1.1\n", "a fit needs at least 20"),
])
def test_unparsable_measurement_files(tmp_path, content, message):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(RomerError, match=message):
        fit_noise(path)
