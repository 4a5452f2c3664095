"""The four readings of ROMER's percentile step, each alone, on tiny random models of three families
(softmax top-k: OLMoE, Qwen2-MoE with renormalised weights; sigmoid + bias, group-limited: DeepSeek-V3)."""

from __future__ import annotations

import pytest
import torch

from romer import NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration.router import LayerTransform, equalize_map, robust_map, token_spread
from romer.calibration.statistics import routing_stats
from romer.moe.telemetry import RoutingRecorder
from tests.families import build

FAMILIES = ["olmoe", "qwen2_moe", "deepseek_v3"]
NOISE = NoiseConfig.preset("gaussian", sigma_dev=0.08, adc_offset_sigma=20.0)


def ids(seed: int = 1, tokens: int = 64 * 8) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def quartiles(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.quantile(z.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
    return q[1].float(), (q[2] - q[0]).float()


def test_equalize_maps_every_expert_onto_the_layers_pooled_median_and_iqr():
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(8000, 6, generator=g) * torch.linspace(0.5, 2.0, 6) + torch.linspace(-3, 3, 6)
    transform = LayerTransform(None, None, *equalize_map(noisy, 25, 75))
    median, iqr = quartiles(transform(noisy))
    pooled_median, pooled_iqr = quartiles(noisy.reshape(-1, 1))
    assert torch.allclose(median, pooled_median.expand(6), atol=1e-3)
    assert torch.allclose(iqr, pooled_iqr.expand(6), atol=1e-3)
    assert median.std() < 1e-3  # no expert systematically above or below another


def test_renorm_targets_are_the_clean_twins_and_equalize_needs_none():
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(4000, 3, generator=g) + torch.tensor([0.0, 1.0, -1.0])
    noisy = clean * 1.5 + torch.tensor([2.0, -2.0, 0.5])
    _, _, target_median, target_iqr = robust_map(noisy, clean, 25, 75)
    assert torch.allclose(target_median, quartiles(clean)[0]) and torch.allclose(target_iqr, quartiles(clean)[1])
    median, _ = quartiles(LayerTransform(None, None, *robust_map(noisy, clean, 25, 75))(noisy))
    assert torch.allclose(median, quartiles(clean)[0], atol=1e-3)  # the clean twin's per-expert differences stay


def test_token_reading_spreads_each_tokens_logits_around_its_own_quartiles():
    z = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [10.0, -10.0, 0.0, 5.0, -5.0]])
    out = token_spread(z, 25, 75, 1.0)
    # token 0: Q1 = 1, Q3 = 3, IQR = 2; token 1: Q1 = -5, Q3 = 5, IQR = 10
    assert out.tolist() == [[-2.0, 1.0, 2.0, 3.0, 6.0], [20.0, -20.0, 0.0, 5.0, -5.0]]
    assert torch.equal(out.argsort(-1), z.argsort(-1))  # order within a token is kept


def test_token_reading_cannot_change_softmax_top_k_choices_only_their_weights():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(500, 32, generator=g)
    spread = token_spread(logits, 25, 75, 1.5)
    probs, spread_probs = logits.softmax(-1), spread.softmax(-1)
    top, spread_top = probs.topk(4, -1), spread_probs.topk(4, -1)
    assert torch.equal(top.indices, spread_top.indices)
    assert (spread_top.values.sum(-1) > top.values.sum(-1)).all()  # un-normalised weights grow
    # renormalised top-k weights: all four chosen sit above Q3 (8 of 32 do) and move alike, so nothing changes
    normalised = top.values / top.values.sum(-1, keepdim=True)
    assert torch.allclose(spread_top.values / spread_top.values.sum(-1, keepdim=True), normalised, atol=1e-6)


def choices(model, tokens) -> list[torch.Tensor]:
    with RoutingRecorder(model, keep_choices=True) as recorder, torch.no_grad():
        model(input_ids=tokens.view(-1, 64))
    return [recorder.layer_choices(i).sort(-1).values for i in range(len(recorder.layers))]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reading", ["clamp", "renorm", "equalize", "token"])
def test_each_reading_calibrates_and_undoes_exactly(family, reading):
    model = build(family)
    tokens = ids(2)
    with apply_noise_(model, NOISE, seed=3):
        with torch.no_grad():
            noisy = model(input_ids=tokens.view(-1, 64)).logits
        calibration = calibrate_(model, RomerConfig(method="rc", router=reading, calib_tokens=512, window=64), ids())
        transforms = calibration.transforms
        assert len(transforms) == len(calibration.layers) and all(t.active for t in transforms.values())
        with torch.no_grad():
            calibrated = model(input_ids=tokens.view(-1, 64)).logits
        calibration.remove()
        with torch.no_grad():
            assert torch.equal(model(input_ids=tokens.view(-1, 64)).logits, noisy)
    assert not torch.equal(calibrated, noisy)


@pytest.mark.parametrize("family", FAMILIES)
def test_equalize_levels_the_experts_on_the_calibration_logits(family):
    model = build(family)
    with apply_noise_(model, NOISE, seed=5):
        raw = routing_stats(model, ids().view(-1, 64), 8, logits=True).logits
        calibration = calibrate_(model, RomerConfig(method="rc", router="equalize", calib_tokens=512, window=64), ids())
        for layer, logits in enumerate(raw):
            before, _ = quartiles(logits)
            after, _ = quartiles(calibration.transforms[layer](logits))
            assert after.std() < 1e-3 < before.std()
        calibration.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_token_reading_changes_choices_only_where_routing_is_not_a_softmax_top_k(family):
    model = build(family)
    tokens = ids(4)
    with apply_noise_(model, NOISE, seed=1):
        before = choices(model, tokens)
        calibration = calibrate_(model, RomerConfig(method="rc", router="token", lam=1.5, calib_tokens=512, window=64),
                                 ids())
        after = choices(model, tokens)
        calibration.remove()
    # the first MoE layer sees the same inputs either way (later layers see what changed weights made of them)
    changed = int((after[0] != before[0]).any(-1).sum())
    if family == "deepseek_v3":
        # sigmoid scores saturate and the per-expert selection bias then weighs more: choices can move
        assert changed > 0
    else:
        assert changed == 0
