"""The periphery of each output column: ADC offsets and gains, shared ADCs, IR drop.

Each effect is checked as a distribution (moments within their confidence bounds and a
Kolmogorov–Smirnov test at a fixed seed), and on whole models: a router column's offset is a
per-expert logit shift, the same for every token with the same input scale; weights and analog
mode agree; restore is exact; `make_digital` removes the errors.
"""

import math

import pytest
import torch
from scipy import stats

from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_
from romer.noise.analog import input_scale
from romer.noise.periphery import AdcGain, AdcOffset, ColumnPeriphery, IrDrop, lsb
from romer.noise.physics import DevicePhysics
from romer.noise.streams import stream

COLUMNS = 200_000
IDEAL = dict(sigma_dev=0.0, temp_shift_per_c=0.0, temp_spread_per_c=0.0, leak_ref_us=0.0)


def periphery(**fields) -> ColumnPeriphery:
    return DevicePhysics.from_config(NoiseConfig(**fields)).periphery


def draw(p: ColumnPeriphery, seed: int = 0):
    return p.draw(COLUMNS, 1, stream(seed, "w", "periphery"))


def assert_normal(sample: torch.Tensor, mean: float, std: float) -> None:
    """Sample mean within 4 standard errors, std within 4 of its standard errors, and a KS test."""
    values = sample.double().flatten()
    n = values.numel()
    assert abs(values.mean().item() - mean) < 4 * std / math.sqrt(n)
    assert abs(values.std().item() - std) < 4 * std / math.sqrt(2 * (n - 1))
    assert stats.kstest(values.numpy(), "norm", args=(mean, std)).pvalue > 1e-3


def test_offset_is_normal_with_the_trim_residual_std_at_reference():
    errors = draw(periphery(adc_offset_sigma=0.7))
    assert errors.gain is None
    assert_normal(errors.offset_lsb, 0.0, 0.7)


def test_offset_grows_with_distance_from_the_trim_temperature():
    p = periphery(adc_offset_sigma=0.3, adc_offset_per_c=0.01, temperature_c=80.0, reference_c=25.0)
    assert p.offset.std_lsb == pytest.approx(math.hypot(0.3, 0.55))
    assert_normal(draw(p).offset_lsb, 0.0, math.hypot(0.3, 0.55))
    cold = periphery(adc_offset_sigma=0.3, adc_offset_per_c=0.01, temperature_c=-30.0, reference_c=25.0)
    assert cold.offset.std_lsb == pytest.approx(p.offset.std_lsb)  # |ΔT|: cooling moves offsets as much


def test_the_same_chip_heated_keeps_its_trim_residual():
    hot = draw(periphery(adc_offset_sigma=0.3, adc_offset_per_c=0.01, temperature_c=80.0)).offset_lsb
    cool = draw(periphery(adc_offset_sigma=0.3, adc_offset_per_c=0.01, temperature_c=25.0)).offset_lsb
    drift = hot - cool
    assert_normal(drift, 0.0, 0.55)
    assert abs(stats.pearsonr(drift.numpy(), cool.numpy())[0]) < 0.01  # heat adds an independent part


def test_gain_is_normal_around_one():
    errors = draw(periphery(adc_gain_sigma=0.02))
    assert errors.offset_lsb is None
    assert_normal(errors.gain, 1.0, 0.02)


def test_switched_off_draws_nothing_and_one_field_never_moves_another():
    assert periphery().draw(64, 2, stream(0, "w")) is None
    assert not periphery(ir_drop=0.0).per_forward
    both = draw(periphery(adc_offset_sigma=0.5, adc_gain_sigma=0.01))
    assert torch.equal(both.offset_lsb, draw(periphery(adc_offset_sigma=0.5)).offset_lsb)
    assert torch.equal(both.gain, draw(periphery(adc_gain_sigma=0.01)).gain)


def test_strength_scales_the_spreads_exactly():
    base = draw(periphery(adc_offset_sigma=0.5, adc_offset_per_c=0.01, adc_gain_sigma=0.01, temperature_c=60.0))
    double = draw(periphery(adc_offset_sigma=0.5, adc_offset_per_c=0.01, adc_gain_sigma=0.01, temperature_c=60.0,
                            strength=2.0))
    assert torch.allclose(double.offset_lsb, 2 * base.offset_lsb)
    assert torch.allclose(double.gain - 1, 2 * (base.gain - 1), atol=1e-6)  # float32 rounding of 1 + small


def test_columns_sharing_an_adc_share_its_errors():
    p = periphery(adc_offset_sigma=1.0, adc_gain_sigma=0.01, adc_group=4, tile_cols=8)
    errors = p.draw(20, 3, stream(0, "w", "periphery"))  # 3 output tiles (8, 8, 4 columns) × 3 input tiles
    offsets = errors.offset_lsb
    assert offsets.shape == (20, 3)
    for start in (0, 4, 8, 12, 16):
        group = offsets[start:start + 4]
        assert torch.equal(group, group[:1].expand_as(group))
    assert len(offsets[:, 0].unique()) == 5  # five ADCs per input tile, each its own draw
    assert len(offsets.unique()) == 15


def test_ir_drop_matches_the_published_formula():
    drop = IrDrop(scale=2.0, g_max_us=25.0)
    x = torch.tensor([[[0.5, -1.0, 0.25, 1.0]]])                    # 1 token, 1 tile, 4 rows
    w = torch.tensor([[[1.0, 0.5, -0.25, 0.75]], [[-0.5, 0.0, 1.0, 0.2]]])  # 2 columns
    expected = []
    for column in w[:, 0]:
        current = sum(abs(a) * abs(b) for a, b in zip(x[0, 0].tolist(), column.tolist()))
        a = 4 * current * (0.35 * 25e-6)
        c = a * (a * (0.05 * a - 0.2) + 0.5)
        weighted = sum(xj * wj * (1 - (1 - j / 4) ** 2) for j, (xj, wj) in enumerate(zip(x[0, 0].tolist(),
                                                                                           column.tolist())))
        expected.append(2.0 * c * weighted)
    assert torch.allclose(drop.loss(x, w)[0, 0], torch.tensor(expected), rtol=1e-5)
    assert not IrDrop(0.0, 25.0).active


def test_ir_drop_attenuates_more_where_more_current_flows():
    drop = IrDrop(scale=1.0, g_max_us=25.0)
    x = torch.ones(1, 1, 256)
    w = torch.stack([torch.full((1, 256), 0.2), torch.full((1, 256), 1.0)])
    y = torch.einsum("nkr,okr->nko", x, w)
    relative = (drop.loss(x, w) / y)[0, 0]
    assert (relative > 0).all() and relative[1] > relative[0]


@pytest.fixture
def model(tiny_moe_dir):
    return load_model(str(tiny_moe_dir))[0]


def router_logits(model, ids, layer=0):
    captured = {}
    gate = model.model.layers[layer].mlp.gate
    handle = gate.register_forward_hook(lambda m, a, out: captured.update(x=a[0].detach(), logits=out[0].detach()))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return captured["x"].reshape(-1, captured["x"].shape[-1]), captured["logits"].reshape(-1, gate.weight.shape[0])


def tokens(count=96, window=32):
    """Token ids from 1: id 0 is padding, whose zero embedding leaves a zero router input."""
    return (torch.arange(count).remainder(299) + 1).view(-1, window)


@pytest.mark.parametrize("mode", ["weights", "analog"])
def test_a_router_column_offset_shifts_its_expert_logit_alike_for_every_token(model, mode):
    x, clean = router_logits(model, tokens())
    config = NoiseConfig(adc_offset_sigma=50.0, roles=("router",), mode=mode, dac_bits=24, adc_bits=16,
                         adc_full_scale=64.0, **IDEAL)
    with apply_noise_(model, config, seed=5) as chip:
        _, noisy = router_logits(model, tokens())
        program = chip.program_of("model.layers.0.mlp.gate.weight")
    per_unit_scale = (noisy - clean) / input_scale(x)  # [tokens, experts]
    step = lsb(config.adc_bits, config.adc_full_scale)
    expected = (program.errors.offset_lsb * step * program.scales * config.g_max_us).sum(-1)
    # analog mode rounds each tile sum to the ADC's grid: at most half an LSB, plus the DAC's rounding
    rounding = step * (program.scales * config.g_max_us).sum(-1).max().item()
    assert torch.allclose(per_unit_scale, expected.expand_as(per_unit_scale),
                          atol=1e-4 if mode == "weights" else rounding)
    assert expected.std() > 20 * rounding  # experts are shifted differently, far beyond the rounding


def test_weights_and_analog_mode_agree_on_the_output_error(model):
    """Fine converters: the analog tile product (gain at the ADC, offset in LSB) and weights mode (gain
    folded into the weights, offset added per token) agree to within the ADC's rounding."""
    config = dict(adc_offset_sigma=50.0, adc_gain_sigma=0.05, adc_group=2, dac_bits=24, adc_bits=16,
                  adc_full_scale=64.0, roles=("router",), **IDEAL)
    outputs, programs = {}, {}
    for mode in ("weights", "analog"):
        with apply_noise_(model, NoiseConfig(mode=mode, **config), seed=2) as chip:
            x, outputs[mode] = router_logits(model, tokens(), layer=1)
            programs[mode] = chip.program_of("model.layers.1.mlp.gate.weight")
    _, clean = router_logits(model, tokens(), layer=1)
    assert torch.equal(programs["weights"].errors.offset_lsb, programs["analog"].errors.offset_lsb)
    assert programs["weights"].errors.gain is None  # folded into the stored weights
    step = lsb(16, 64.0) * (programs["analog"].scales * 25.0).sum(-1).max().item()
    rounding = step * input_scale(x)  # per token
    assert ((outputs["analog"] - outputs["weights"]).abs() <= rounding).all()
    assert ((outputs["weights"] - clean).abs().mean(-1, keepdim=True) > 10 * rounding).all()


def test_8_bit_analog_mode_agrees_on_the_expected_error(model):
    """At 8 bits the converters round, but the error each column's periphery adds, averaged over tokens, is
    the one weights mode adds."""
    ids = tokens(1024, 64)
    x, clean = router_logits(model, ids)
    mean_error = {}
    for mode in ("weights", "analog"):
        config = NoiseConfig(adc_offset_sigma=4.0, roles=("router",), mode=mode, **IDEAL)
        with apply_noise_(model, config, seed=9):
            mean_error[mode] = ((router_logits(model, ids)[1] - clean) / input_scale(x)).mean(0)
    assert stats.pearsonr(mean_error["weights"].numpy(), mean_error["analog"].numpy())[0] > 0.98
    assert torch.allclose(mean_error["analog"], mean_error["weights"], atol=0.15 * mean_error["weights"].abs().max())


@pytest.mark.parametrize("mode", ["weights", "analog"])
def test_restore_is_exact_and_the_same_seed_gives_the_same_bits(model, mode):
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=2.0, adc_gain_sigma=0.02, adc_group=4, ir_drop=1.0,
                                mode=mode)
    runs = []
    for _ in range(2):
        with apply_noise_(model, config, seed=11):
            with torch.no_grad():
                runs.append(model(input_ids=tokens()).logits)
        assert all(torch.equal(p, clean[n]) for n, p in model.named_parameters())
    assert torch.equal(runs[0], runs[1])
    with apply_noise_(model, config, seed=12):
        with torch.no_grad():
            assert not torch.equal(model(input_ids=tokens()).logits, runs[0])


def test_make_digital_removes_a_tensors_periphery_errors(model):
    _, clean = router_logits(model, tokens())
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=3.0, adc_gain_sigma=0.05, roles=("router",))
    with apply_noise_(model, config, seed=1) as chip:
        assert not torch.allclose(router_logits(model, tokens())[1], clean, atol=1e-3)
        chip.make_digital("model.layers.0.mlp.gate.weight")
        assert torch.equal(router_logits(model, tokens())[1], clean)
        chip.make_digital("model.layers.0.mlp.gate.weight", False)
        assert not torch.allclose(router_logits(model, tokens())[1], clean, atol=1e-3)


def test_each_expert_slot_has_its_own_columns(model):
    config = NoiseConfig(adc_offset_sigma=1.0, adc_gain_sigma=0.05, roles=("experts",), mode="analog", **IDEAL)
    name = "model.layers.0.mlp.experts.down_proj"
    with apply_noise_(model, config, seed=0) as chip:
        first = chip.program_of(name).errors
    assert first.offset_lsb.shape[0] == model.model.layers[0].mlp.experts.down_proj.shape[0]
    assert not torch.equal(first.offset_lsb[0], first.offset_lsb[1])
    with torch.no_grad():
        model.model.layers[0].mlp.experts.down_proj[0].mul_(3)  # another slot's content changes nothing
    with apply_noise_(model, config, seed=0) as chip:
        again = chip.program_of(name).errors
    assert torch.equal(first.offset_lsb[1:], again.offset_lsb[1:]) and torch.equal(first.gain, again.gain)


def test_periphery_streams_leave_device_draws_alone(model):
    name = "model.layers.0.self_attn.q_proj.weight"
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=4):
        plain = dict(model.named_parameters())[name].detach().clone()
    with apply_noise_(model, NoiseConfig.preset("cim-80c", adc_offset_sigma=2.0), seed=4):
        with_offsets = dict(model.named_parameters())[name].detach().clone()
    assert torch.equal(plain, with_offsets)  # offsets act per forward; a gain would fold in


def test_unit_helpers():
    assert lsb(8, 8.0) == pytest.approx(8.0 / 127)
    assert AdcOffset(0.0, 0.0, 55.0).active is False and AdcGain(0.0).active is False


def _tile_products_per_element(flat, w_norm, scales, errors, c, ir_drop, adc_rng, step, pad):
    """The tile path written out step by step in device units, as the docstrings describe it (the form before the
    partial sums were kept in ADC codes)."""
    from romer.noise.analog import quantize

    out_dim, tiles, rows = w_norm.shape
    x_max = input_scale(flat)
    x_in = torch.nn.functional.pad(flat / x_max, (0, pad)).view(-1, tiles, rows)
    if c.mode == "analog":
        x_in = quantize(x_in, c.dac_bits)
    partial = torch.einsum("nkr,okr->nko", x_in, w_norm)
    if ir_drop.active:
        partial = partial - ir_drop.loss(x_in, w_norm)
    if c.mode == "analog" and errors is not None and errors.gain is not None:
        partial = partial * errors.gain.t()
    if adc_rng is not None:
        partial = partial + torch.randn(partial.shape, generator=adc_rng) * (c.sigma_adc * c.strength * c.adc_full_scale)
    if errors is not None and errors.offset_lsb is not None:
        partial = partial + errors.offset_lsb.t() * step
    if c.mode == "analog":
        partial = quantize(partial / c.adc_full_scale, c.adc_bits) * c.adc_full_scale
    return (partial * (scales.t() * c.g_max_us)).sum(dim=1) * x_max


@pytest.mark.parametrize("tiles", [1, 3])
@pytest.mark.parametrize("adc_bits", [1, 4, 8])
@pytest.mark.parametrize("ir_drop", [0.0, 0.5])
@pytest.mark.parametrize("grad", [False, True])
def test_the_tile_path_in_adc_codes_is_the_per_element_form(tiles, adc_bits, ir_drop, grad):
    """Keeping the partial sums in ADC codes (and working in place without autograd) changes no output beyond float
    rounding: where a value sits on a rounding edge one code may differ, never more, and almost nowhere."""
    from romer.noise.analog import _tile_products, adc_code_unit
    from romer.noise.periphery import ColumnErrors

    c = NoiseConfig.preset("cim-80c").model_copy(update={"mode": "analog", "adc_bits": adc_bits, "ir_drop": ir_drop})
    g = torch.Generator().manual_seed(3)
    out_dim, rows, n = 48, 32, 64
    pad = 5 if tiles > 1 else 0
    w_norm = torch.randn(out_dim, tiles, rows, generator=g) * 0.2
    if pad:
        w_norm[:, -1, rows - pad:] = 0
    scales = torch.rand(out_dim, tiles, generator=g) + 0.5
    errors = ColumnErrors(1 + 0.05 * torch.randn(out_dim, tiles, generator=g), torch.randn(out_dim, tiles, generator=g))
    flat = torch.randn(n, tiles * rows - pad, generator=g).requires_grad_(grad)
    irdrop, step = IrDrop(c.ir_drop, c.g_max_us), lsb(c.adc_bits, c.adc_full_scale)
    unit = adc_code_unit(c)
    fast = _tile_products(flat, w_norm / unit, unit, scales, errors, c, irdrop, torch.Generator().manual_seed(9), step,
                          pad)
    slow = _tile_products_per_element(flat, w_norm, scales, errors, c, irdrop, torch.Generator().manual_seed(9),
                                      step, pad)
    code = (scales.t() * c.g_max_us * c.adc_full_scale / max(1, 2 ** (adc_bits - 1) - 1)).sum(0) * input_scale(flat)
    difference = (fast - slow).abs().detach()
    assert (difference <= 1e-5 * slow.abs().detach().amax() + 1.01 * code.detach()).all()
    assert (difference > 1e-4 * slow.abs().detach().amax()).float().mean() < 0.01
    assert fast.requires_grad == grad
