"""romer's physics against the reference simulator, IBM aihwkit-lightning 2.1.0, where the two overlap.

Deterministic: DAC and ADC at 8 bits with dynamic per-token input ranges agree to float rounding wherever both
cut the input into the same tiles and see the same input range; where they differ by design (the peer's
dynamic range per input slice, romer's per token; the peer's balanced slices, romer's filled tiles) each side's
own semantics is tested and the size of the difference is bounded. Stochastic: romer's ADC noise and read
(weight) noise against the peer's `out_noise` and `AddNormal[PerChannel]` at matched settings, as
distributions of the output error (two-sample Kolmogorov–Smirnov at a fixed seed, first two moments).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from romer import NoiseConfig, apply_noise_
from romer.errors import RomerError
from romer.noise import parse_noise_spec

aihwkit = pytest.importorskip("aihwkit_lightning", reason="aihwkit-lightning is not installed: pip install "
                                                          "'romer[aihwkit]' (the dev extra installs it)")
from aihwkit_lightning.nn import AnalogLinear  # noqa: E402
from aihwkit_lightning.simulator.configs import (TorchInferenceRPUConfig, WeightClipType,  # noqa: E402
                                                 WeightNoiseInjectionType, WeightQuantizationType)

from romer.noise.aihwkit_lightning import rpu_config  # noqa: E402


def chip(**fields) -> NoiseConfig:
    return NoiseConfig.preset("ideal", tile_cols=65536, roles=("dense_mlp",), **fields)


def pair(inputs: int, outputs: int, config: NoiseConfig, seed: int = 0):
    """(a host module whose `proj` romer programs, the peer's AnalogLinear with the same weights)."""
    torch.manual_seed(seed)
    layer = torch.nn.Linear(inputs, outputs, bias=False)
    host = torch.nn.Module()
    host.proj = layer
    host.get_output_embeddings = lambda: None
    peer = AnalogLinear(inputs, outputs, bias=False, rpu_config=rpu_config(config))
    with torch.no_grad():
        peer.weight.copy_(layer.weight)
    return host, peer.eval()


def outputs(host, peer, config: NoiseConfig, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), apply_noise_(host, config, seed=0):
        return host.proj(x), peer(x)


def every_slice_holds_the_token_max(x: torch.Tensor, starts) -> torch.Tensor:
    """The same inputs with each token's largest |x| written at every slice start: a per-slice range is then the
    per-token range."""
    x = x.clone()
    peak = x.abs().amax(-1)
    for start in starts:
        x[:, start] = peak
    return x


# (inputs, outputs, tile rows): one tile; an odd-sized single tile; several full tiles
AGREEING = [(64, 48, 64), (37, 11, 64), (512, 96, 256), (384, 70, 128)]


@pytest.mark.parametrize("scaling", ["column", "tile"])
@pytest.mark.parametrize("inputs, outputs_, rows", AGREEING)
def test_dac_and_adc_agree_with_the_peer_to_float_rounding(inputs, outputs_, rows, scaling):
    config = chip(mode="analog", tile_rows=rows, scaling=scaling, dac_bits=8, adc_bits=8,
                  adc_full_scale=2.0)
    host, peer = pair(inputs, outputs_, config)
    x = every_slice_holds_the_token_max(torch.randn(300, inputs), range(0, inputs, rows))
    mine, theirs = outputs(host, peer, config, x)
    weight = host.proj.weight.detach()
    clean = x @ weight.t()
    assert (mine - clean).abs().max() > 1e-3  # the converters do act (8 bits, a bound that clips)
    assert_equal_up_to_rounding_ties(mine, theirs, weight, x, config)


def assert_equal_up_to_rounding_ties(mine, theirs, weight, x, config) -> None:
    """Equal to float rounding, but for the rare output where the two sums land on either side of a rounding tie of
    an ADC (one LSB of one tile apart): at most 0.2 % of the outputs, each at most one LSB per tile away."""
    tiles = -(-weight.shape[1] // config.tile_rows)
    wmax = weight.abs().amax(-1) if config.scaling == "column" else weight.abs().max().expand(weight.shape[0])
    lsb = config.adc_full_scale / (2 ** (config.adc_bits - 1) - 1) * wmax * x.abs().amax(-1, keepdim=True)
    difference = (mine - theirs).abs()
    assert bool((difference <= tiles * lsb * (1 + 1e-4)).all())
    assert float((difference > 1e-5 * float(theirs.abs().max())).float().mean()) <= 2e-3


def test_per_token_and_per_slice_input_ranges_differ_by_design_and_by_little():
    """Several tiles, random inputs: the peer takes each slice's own range, romer the token's. Each side's semantics:
    the peer's output is the sum of its slices run alone; romer's is unchanged when every slice is given the token's
    range, the peer's is not. The difference is a fraction of the converters' own error."""
    inputs, outputs_, rows = 512, 96, 128
    config = chip(mode="analog", tile_rows=rows, scaling="column", dac_bits=8, adc_bits=8,
                  adc_full_scale=2.0)
    host, peer = pair(inputs, outputs_, config)
    x = torch.randn(300, inputs)
    mine, theirs = outputs(host, peer, config, x)
    single = chip(mode="analog", tile_rows=rows, scaling="column", dac_bits=8, adc_bits=8,
                  adc_full_scale=2.0)
    parts = []
    for start in range(0, inputs, rows):
        _, slice_peer = pair(rows, outputs_, single)
        with torch.no_grad():
            slice_peer.weight.copy_(peer.weight[:, start:start + rows])
            parts.append(slice_peer(x[:, start:start + rows]))
    assert torch.allclose(theirs, sum(parts), rtol=1e-5, atol=1e-5)  # per-slice ranges, slices summed digitally
    clean = x @ host.proj.weight.detach().t()
    error_mine, error_theirs = float((mine - clean).norm()), float((theirs - clean).norm())
    difference = float((mine - theirs).norm())
    assert difference > 0 and difference < error_mine + error_theirs
    assert 0.5 < error_mine / error_theirs < 2.0


def test_balanced_slices_against_filled_tiles():
    """The peer splits 300 inputs at most 128 wide into three slices of 100; romer fills tiles of 128, 128, 44. With
    tile_rows = 100 romer cuts as the peer does, and the two agree."""
    inputs, outputs_ = 300, 70
    x = every_slice_holds_the_token_max(torch.randn(200, inputs), (0, 100, 128, 200, 256))
    peer_side = chip(mode="analog", tile_rows=128, scaling="column", dac_bits=8, adc_bits=8,
                     adc_full_scale=2.0)
    host, peer = pair(inputs, outputs_, peer_side)
    filled, theirs = outputs(host, peer, peer_side, x)
    cut_as_the_peer = peer_side.model_copy(update={"tile_rows": 100})
    balanced, _ = outputs(host, peer, cut_as_the_peer, x)
    assert_equal_up_to_rounding_ties(balanced, theirs, host.proj.weight.detach(), x, cut_as_the_peer)
    assert float(((filled - theirs).abs() > 1e-5 * float(theirs.abs().max())).float().mean()) > 0.05


def standardized(errors: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (errors / scale).flatten().double()


def assert_same_distribution(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    """Two samples of standardized errors: KS p > 0.01 at a fixed seed; mean 0 and variance 1 within 4 standard
    errors each."""
    assert stats.ks_2samp(mine.numpy(), theirs.numpy()).pvalue > 0.01
    for sample in (mine, theirs):
        n = sample.numel()
        assert abs(float(sample.mean())) < 4 / math.sqrt(n)
        assert abs(float(sample.var()) - 1) < 4 * math.sqrt(2 / n)


def test_adc_noise_matches_the_peers_output_noise():
    inputs, outputs_, sigma = 96, 40, 0.05
    config = chip(mode="analog", tile_rows=128, scaling="column", dac_bits=24, adc_bits=24,
                  adc_full_scale=128.0, sigma_adc=sigma / 128.0)
    host, peer = pair(inputs, outputs_, config)
    assert peer.rpu_config.forward.out_noise == pytest.approx(sigma)
    x = torch.randn(64, inputs)
    weight = host.proj.weight.detach()
    clean = x @ weight.t()
    scale = sigma * weight.abs().amax(-1) * x.abs().amax(-1, keepdim=True)  # σ · the column's wmax · the token's range
    torch.manual_seed(1)  # the peer draws from torch's global generator
    peer.train()  # the peer's output noise is a training-time effect
    with torch.no_grad(), apply_noise_(host, config, seed=3):
        mine = torch.stack([host.proj(x) - clean for _ in range(8)])
        theirs = torch.stack([peer(x) - clean for _ in range(8)])
    assert_same_distribution(standardized(mine, scale), standardized(theirs, scale))


@pytest.mark.parametrize("scaling, noise_type", [("column", "AddNormalPerChannel"), ("tile", "AddNormal")])
def test_read_noise_matches_the_peers_additive_weight_noise(scaling, noise_type):
    inputs, outputs_, read_sigma = 80, 30, 0.02
    config = chip(tile_rows=128, scaling=scaling, read_sigma=read_sigma)
    host, peer = pair(inputs, outputs_, config)
    assert peer.rpu_config.modifier.noise_type.value == noise_type
    assert peer.rpu_config.modifier.std_dev == pytest.approx(read_sigma * math.sqrt(2))
    x = torch.randn(64, inputs)
    weight = host.proj.weight.detach()
    clean = x @ weight.t()
    wmax = weight.abs().amax(-1) if scaling == "column" else weight.abs().max().expand(outputs_)
    scale = math.sqrt(2) * read_sigma * wmax * x.norm(dim=-1, keepdim=True)
    torch.manual_seed(2)
    peer.train()
    with torch.no_grad(), apply_noise_(host, config, seed=4):
        mine = torch.stack([host.proj(x) - clean for _ in range(8)])
        theirs = torch.stack([peer(x) - clean for _ in range(8)])
    assert_same_distribution(standardized(mine, scale), standardized(theirs, scale))


# ---- the config bridge ----------------------------------------------------------------------------------------
def peer_config(**groups) -> TorchInferenceRPUConfig:
    config = TorchInferenceRPUConfig()
    for path, value in groups.items():
        target = config
        *parents, last = path.split("__")
        for name in parents:
            target = getattr(target, name)
        setattr(target, last, value)
    return config


def test_the_peers_defaults_are_romers_ideal_chip_and_round_trip():
    config = NoiseConfig.from_aihwkit_lightning(TorchInferenceRPUConfig())
    assert config.mode == "weights" and config.read_sigma == 0 and config.sigma_dev == 0
    assert NoiseConfig.from_aihwkit_lightning(config.to_aihwkit_lightning()) == config


def test_an_analog_foundation_model_config_round_trips():
    """8-bit DAC and ADC with dynamic ranges, an output bound, per-channel output noise and weight noise, 512-row
    slices (the kind of config SPEC §9's Analog Foundation Models train with)."""
    peer = peer_config(forward__inp_res=254, forward__out_res=254, forward__out_bound=12.0, forward__out_noise=0.04,
                       forward__out_noise_per_channel=True, clip__type=WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL,
                       modifier__noise_type=WeightNoiseInjectionType.ADD_NORMAL_PER_CHANNEL, modifier__std_dev=0.03,
                       mapping__max_input_size=512, pre_post__input_range__enable=True,
                       pre_post__input_range__dynamic=True)
    config = NoiseConfig.from_aihwkit_lightning(peer)
    assert (config.mode, config.tile_rows, config.scaling, config.dac_bits, config.adc_bits) == ("analog", 512, "column",
                                                                                               8, 8)
    assert config.adc_full_scale == 12.0 and config.sigma_adc * 12.0 == pytest.approx(0.04)
    assert config.read_sigma == pytest.approx(0.03 / math.sqrt(2))
    back = config.to_aihwkit_lightning()
    from romer.noise.aihwkit_lightning import peer_fields

    original = peer_fields(peer)
    assert back["forward"] == pytest.approx(original["forward"]) and back["mapping"] == original["mapping"]
    assert back["clip"] == original["clip"] and back["pre_post"] == original["pre_post"]
    assert back["modifier"] == pytest.approx(original["modifier"])
    assert NoiseConfig.from_aihwkit_lightning(back) == config


@pytest.mark.parametrize("field, groups", [
    ("pre_post.input_range.dynamic", {"forward__inp_res": 254, "pre_post__input_range__enable": True}),
    ("pre_post.input_range.fast_mode", {"pre_post__input_range__enable": True, "pre_post__input_range__dynamic": True,
                                        "pre_post__input_range__fast_mode": True}),
    ("modifier.quantization_type", {"modifier__quantization_type": WeightQuantizationType.DISCRETIZE}),
    ("clip.type", {"clip__type": WeightClipType.LEARNABLE_PER_CHANNEL}),
    ("forward.out_noise_per_channel", {"forward__out_noise": 0.02, "forward__out_noise_per_channel": True,
                                       "pre_post__input_range__enable": True, "pre_post__input_range__dynamic": True}),
    ("forward.inp_res", {"forward__inp_res": 100, "pre_post__input_range__enable": True,
                         "pre_post__input_range__dynamic": True}),
])
def test_a_peer_field_romer_cannot_honour_is_refused_in_one_line(field, groups):
    with pytest.raises(RomerError, match=f"'{field}'") as error:
        NoiseConfig.from_aihwkit_lightning(peer_config(**groups))
    assert "\n" not in str(error.value)


def test_a_romer_chip_the_peer_cannot_express_is_refused_in_one_line():
    with pytest.raises(RomerError, match="'sigma_dev' has no aihwkit-lightning equivalent"):
        NoiseConfig.preset("cim-80c").to_aihwkit_lightning()


def test_the_peers_fields_as_yaml_on_the_command_line(tmp_path):
    path = tmp_path / "peer.yaml"
    path.write_text("aihwkit_lightning:\n  forward: {inp_res: 254, out_res: 254, out_bound: 10.0}\n"
                    "  clip: {type: LayerGaussianPerChannel}\n  mapping: {max_input_size: 256}\n"
                    "  pre_post: {input_range: {enable: true, dynamic: true}}\nroles: [attention, experts]\n")
    config = parse_noise_spec(f"{path}:strength=1.0")
    assert (config.mode, config.tile_rows, config.adc_full_scale, config.roles) == ("analog", 256, 10.0,
                                                                                    ("attention", "experts"))
    path.write_text("aihwkit_lightning:\n  forward: {inp_resolution: 254}\n")
    with pytest.raises(RomerError, match="'forward.inp_resolution' is unknown"):
        parse_noise_spec(str(path))
