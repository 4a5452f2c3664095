"""ROMER calibration: each method on tiny random models of several families."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import romer
from romer import NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration.replacement import Replacement, plan_replacements, write_replacement
from romer.calibration.router import LayerTransform, fences, robust_map
from romer.calibration.state import Calibration
from romer.errors import RomerError
from romer.moe.adapter import adapter_for
from romer.moe.telemetry import RoutingRecorder
from tests.families import build

FAMILIES = ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3"]
NOISE = NoiseConfig.preset("gaussian", sigma_dev=0.08)


def calib_ids(seed: int = 1, tokens: int = 64 * 8, low: int = 1, high: int = 128) -> torch.Tensor:
    return torch.randint(low, high, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids.view(-1, 64)).logits


def copy_off_chip(model, layer, src: int, dst: int) -> None:
    """Expert `src` written into slot `dst` of a clean model, through calibration's one copy path."""
    with torch.no_grad():
        write_replacement(adapter_for(model), layer, Replacement(layer.index, cold=dst, hot=src, pairing="weights",
                                                                 cold_share=0.0, hot_share=1.0), chip=None)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
def test_replacement_reprograms_exactly_the_cold_slot_with_its_own_noise(family):
    model = build(family)
    reference = build(family)  # the same clean model, to be programmed with slot 5 already copied into slot 3
    chip = apply_noise_(model, NOISE, seed=4)
    before = snapshot(model)
    calibration = Calibration(model, RomerConfig(), chip)
    layer = calibration.layers[0]
    calibration.replace(Replacement(0, cold=3, hot=5, pairing="weights", cold_share=0.1, hot_share=2.0))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expert_names = {chip.name_of(m, a) for m, a, _ in adapter_for(model).expert_weights(layer, 3)}
    assert changed == expert_names
    adapter = adapter_for(reference)
    ref_layer = adapter.layers(reference)[0]
    copy_off_chip(reference, ref_layer, src=5, dst=3)
    with apply_noise_(reference, NOISE, seed=4):
        ref_params = dict(reference.named_parameters())
        for name, param in model.named_parameters():
            assert torch.equal(param, ref_params[name]), name  # what apply_noise_ gives, bit for bit
    for (module, attr, slot), (hot_module, hot_attr, hot_slot) in zip(adapter_for(model).expert_weights(layer, 3),
                                                                        adapter_for(model).expert_weights(layer, 5)):
        copy = getattr(module, attr) if slot is None else getattr(module, attr)[slot]
        hot = getattr(hot_module, hot_attr) if hot_slot is None else getattr(hot_module, hot_attr)[hot_slot]
        assert not torch.equal(copy, hot)  # fresh noise, not a bit-copy of the hot expert's noisy weights
    calibration.remove()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    chip.restore()


@pytest.mark.parametrize("mode", ["weights", "analog"])
def test_a_replaced_slot_with_periphery_computes_what_programming_the_copy_gives(mode):
    """Only the cold slot is programmed again: its scales, ADC offsets and gains (cim-80c) are the slot's own,
    so the chip's outputs equal those of a chip programmed with the copy already made, bit for bit (the noise
    drawn on every read is switched off: its streams count the reads)."""
    noise = NoiseConfig.preset("cim-80c", mode=mode, read_sigma=0.0, sigma_adc=0.0)
    model, reference = build("olmoe"), build("olmoe")
    ids = calib_ids(tokens=128)
    chip = apply_noise_(model, noise, seed=2)
    untouched = logits_of(model, ids)
    calibration = Calibration(model, RomerConfig(), chip)
    calibration.replace(Replacement(0, cold=3, hot=5, pairing="weights", cold_share=0.1, hot_share=2.0))
    replaced = logits_of(model, ids)
    adapter = adapter_for(reference)
    copy_off_chip(reference, adapter.layers(reference)[0], src=5, dst=3)
    with apply_noise_(reference, noise, seed=2):
        assert torch.equal(replaced, logits_of(reference, ids))
    calibration.remove()
    assert torch.equal(logits_of(model, ids), untouched)
    chip.restore()


def test_clone_pairing_copies_the_router_row_on_chip():
    model = build("olmoe")
    chip = apply_noise_(model, NOISE, seed=1)
    calibration = Calibration(model, RomerConfig(), chip)
    router_name = chip.name_of(calibration.layers[0].router, "weight")
    calibration.replace(Replacement(0, cold=2, hot=6, pairing="clone", cold_share=0.1, hot_share=2.0))
    target = chip.clean_value(router_name)
    assert torch.equal(target[2], target[6])
    stored = calibration.layers[0].router.weight
    assert not torch.equal(stored[2], stored[6])  # each row its own noise
    calibration.remove()
    assert chip.programmed_target(router_name) is None
    chip.restore()


def test_plan_replaces_coldest_below_tau_with_hottest_within_budget():
    shares = torch.tensor([0.30, 0.02, 0.20, 0.05, 0.13, 0.01, 0.20, 0.09])
    plan = plan_replacements(0, shares, tau=0.5, max_replaced=0.25, pairing="replica")
    assert [(r.cold, r.hot) for r in plan] == [(5, 0), (1, 2)]  # 0.01·8, 0.02·8 < 0.5; 0.05·8 = 0.4 over budget
    assert plan_replacements(0, shares, tau=0.05, max_replaced=0.5, pairing="weights") == []


def test_fences_clamp_to_quartiles_plus_lambda_iqr():
    logits = torch.arange(101, dtype=torch.float32).repeat(3, 1).t()  # 0…100 for each of 3 experts
    low, high = fences(logits, 25, 75, 1.0)
    assert torch.allclose(low, torch.full((3,), -25.0)) and torch.allclose(high, torch.full((3,), 125.0))
    transform = LayerTransform(low=low, high=high)
    z = torch.tensor([[-100.0, 50.0, 300.0]])
    assert transform(z).tolist() == [[-25.0, 50.0, 125.0]]


def test_renormalisation_maps_noisy_median_and_iqr_onto_clean():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(5000, 4, generator=g) * torch.tensor([1.0, 2.0, 0.5, 1.5]) + torch.tensor([0.0, 1.0, -2.0, 3.0])
    noisy = torch.randn(5000, 4, generator=g) * 3.0 + 5.0
    transform = LayerTransform(*[None] * 2, *robust_map(noisy, clean, 25, 75))
    mapped = transform(noisy)
    def median_iqr(z):
        q = torch.quantile(z, torch.tensor([0.25, 0.5, 0.75]), dim=0)
        return q[1], q[2] - q[0]
    for got, want in zip(median_iqr(mapped), median_iqr(clean)):
        assert torch.allclose(got, want, atol=1e-4)


def test_replica_dispatch_splits_traffic_and_never_picks_both():
    model = build("olmoe")
    calibration = Calibration(model, RomerConfig(), None)
    calibration.transform(0).replicas.append((5, 3))
    with RoutingRecorder(model, keep_choices=True) as recorder:
        logits_of(model, calib_ids())
    choices = recorder.layer_choices(0)
    both = ((choices == 5).any(-1) & (choices == 3).any(-1)).sum()
    assert both == 0
    hot, copy = int((choices == 5).sum()), int((choices == 3).sum())
    assert hot > 0 and abs(hot - copy) <= max(2, 0.2 * (hot + copy))
    calibration.remove()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["none", "er", "rc", "romer", "tuned"])
def test_every_method_runs_changes_routing_and_undoes_exactly(family, method):
    model = build(family)
    ids = calib_ids()
    chip = apply_noise_(model, NOISE, seed=2)
    noisy = logits_of(model, ids)
    extra = {"tune": False, "load_bias": True, "digital_budget": 0.05} if method == "tuned" else {}
    replacing = {"tau": 1.0} if method in ("er", "romer", "tuned") else {}
    calibration = calibrate_(model, RomerConfig(method=method, **replacing, **extra), ids, chip=chip)
    calibrated = logits_of(model, ids)
    if method == "none":
        assert torch.equal(calibrated, noisy)
    else:
        assert not torch.equal(calibrated, noisy)
    if method in ("er", "romer", "tuned"):
        assert calibration.replacements
    if method in ("rc", "romer"):  # the default reading, renorm, maps each expert's noisy median and IQR
        assert all(t.noisy_median is not None and t.low is None for t in calibration.transforms.values())
    json.dumps(calibration.as_dict())  # the record is plain JSON
    calibration.remove()
    assert torch.equal(logits_of(model, ids), noisy)
    chip.restore()


def test_tuning_scores_on_holdout_and_records_trials():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        calibration = calibrate_(model, RomerConfig(method="tuned", digital_budget=0.0), calib_ids(tokens=64 * 12))
        trials = calibration.report["tuning"]
        assert len(trials) == 12 and all(t["holdout_ppl"] > 1 for t in trials)
        assert calibration.report["tokens"]["holdout"] == 3 * 64
        calibration.remove()


def test_calibration_reads_only_the_calibration_tokens():
    model = build("qwen2_moe")
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].flatten()),
                                    with_kwargs=True)
    calibration_ids = calib_ids(low=1, high=64)  # evaluation text would use ids 64…127
    with apply_noise_(model, NOISE, seed=0):
        calibrate_(model, RomerConfig(method="tuned", digital_budget=0.05, load_bias=True), calibration_ids).remove()
    tokens = torch.cat(seen)
    assert tokens.numel() > 0 and int(tokens.max()) < 64


def test_clean_model_calibration_needs_no_chip_and_renorm_is_nearly_identity():
    model = build("olmoe")
    ids = calib_ids()
    clean = logits_of(model, ids)
    calibration = calibrate_(model, RomerConfig(method="rc", router="renorm"), ids)
    assert calibration.chip is None
    assert torch.allclose(logits_of(model, ids), clean, atol=1e-4)
    calibration.remove()


def test_save_and_load_reproduce_the_calibrated_perplexity_exactly(tiny_moe_dir, tmp_path):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_moe_dir.iterdir()}
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    ids = calib_ids(high=300, tokens=64 * 6)
    evaluation = calib_ids(seed=9, high=300, tokens=64 * 4)
    config = NoiseConfig.preset("gaussian", sigma_dev=0.1)
    with apply_noise_(model, config, seed=3) as chip:
        calibration = calibrate_(model, RomerConfig(method="romer", tau=1.0, pairing="clone"), ids, chip=chip)
        assert calibration.replacements
        expected = romer.perplexity(model, evaluation, 64, 64).ppl
        from romer.calibration.persist import save_calibrated

        folder = save_calibrated(model, tokenizer, calibration, tmp_path / "calibrated")
        calibration.remove()
    record = json.loads((folder / "romer_calibration.json").read_text())
    assert record["chip"]["seed"] == 3 and record["method"] == "romer"
    loaded, _ = romer.load_model(str(folder))
    carried = romer.load_calibration(loaded, folder)
    with apply_noise_(loaded, config, seed=3, calibration=carried):
        assert romer.perplexity(loaded, evaluation, 64, 64).ppl == expected
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_moe_dir.iterdir()}
    assert after == before  # the source checkpoint is read-only to us


def test_bad_calibration_input_is_one_line():
    with pytest.raises(RomerError, match="unknown method 'magic'"):
        romer.calibration.romer_config(method="magic")
    with pytest.raises(RomerError, match="unknown calibration option 'tau_x'"):
        romer.calibration.romer_config(tau_x=1)
    model = build("olmoe")
    with pytest.raises(RomerError, match="fewer than one sequence"):
        calibrate_(model, RomerConfig(method="rc"), torch.arange(10))
    calibrate_(model, RomerConfig(method="rc"), calib_ids())
    with pytest.raises(RomerError, match="already calibrated"):
        calibrate_(model, RomerConfig(method="rc"), calib_ids())


def test_strength_scales_the_random_spread():
    model = build("olmoe")
    clean = snapshot(model)
    name = "model.layers.0.mlp.experts.down_proj"
    deviation = {}
    for strength in (0.0, 1.0, 2.0):
        with apply_noise_(model, NOISE.scaled(strength), seed=0):
            deviation[strength] = float((dict(model.named_parameters())[name].detach() - clean[name]).std())
    assert deviation[0.0] == 0.0
    assert 1.8 < deviation[2.0] / deviation[1.0] < 2.2
