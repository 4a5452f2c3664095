"""`ahwa-lora`: AHWA-LoRA as published (rank-8 LoRA with α = 32 and dropout 0.1 on every on-chip linear layer, a
learned per-column output scale, trained once under fresh noise, deployed unchanged); its training noise preset,
its count, its determinism, its cache and its refusal of the chips it trained on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from romer import NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration.methods.ahwa_lora import TRAIN_SEED_BASE, LoraCorrection
from romer.errors import RomerError
from romer.noise.physics import DevicePhysics
from romer.noise.streams import stream
from tests.families import build

NOISE = NoiseConfig.preset("cim-80c", adc_offset_sigma=2.0)
FAST = dict(method="ahwa-lora", calib_tokens=64 * 12, window=64, lora_epochs=3, lora_max_steps=6, lora_eval_every=2,
            lora_check_chips=1, lora_lr=1e-2, lora_cache="off")
EARLY = {**FAST, "lora_schedule": "early-stop", "lora_weight_decay": 1e-4, "lora_clip": 0.0}


def ids(seed: int = 1, tokens: int = 64 * 12) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def text() -> torch.Tensor:
    """Calibration text with something to learn (uniform random ids have nothing a task loss could lower)."""
    return torch.arange(64 * 12).remainder(97) + 1


def outputs(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(7, 64 * 4).view(-1, 64)).logits


def test_the_authors_injected_weight_noise_has_std_0_067_of_each_column_s_largest_weight_and_is_near_gaussian():
    physics = DevicePhysics.from_config(NoiseConfig.preset("ahwa-injection"))
    clean = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    noisy, _ = physics.program(clean, lambda effect: stream(0, "ahwa", effect, device="cpu"))
    relative = ((noisy - clean) / clean.abs().amax(dim=1, keepdim=True)).flatten().numpy().astype(np.float64)
    assert abs(relative.std() - 0.067) < 0.002
    assert abs(relative.mean()) < 0.002
    # aihwkit adds a Gaussian to the weight; here each device of the pair draws it and a conductance stops at zero,
    # so the error is close to, not exactly, Gaussian (KS distance 0.009 on these 65,536 weights)
    assert stats.kstest(relative / relative.std(), "norm").statistic < 0.02


def test_lora_scales_its_product_by_alpha_over_r_drops_inputs_only_while_training_and_deploys_the_same_function():
    generator = torch.Generator().manual_seed(0)
    adapter = LoraCorrection(6, 5, None, rank=2, alpha=32.0, dropout=0.5, generator=generator, device="cpu")
    with torch.no_grad():
        adapter.up.copy_(torch.randn(6, 2, generator=generator))
        adapter.gain.copy_(torch.randn(6, generator=generator) * 0.1)
    x, y = torch.randn(3, 5), torch.randn(3, 6)
    adapter.eval()
    expected = y * (1 + adapter.gain) + 16.0 * (x @ adapter.down.t()) @ adapter.up.t()
    assert torch.allclose(adapter(y, x, None), expected, atol=1e-6)
    assert torch.allclose(adapter.deployed()(y, x, None), expected, atol=1e-5)
    adapter.train()
    assert not torch.allclose(adapter(y, x, None), expected, atol=1e-3)  # half the inputs dropped


def test_ahwa_lora_trains_once_is_deterministic_counts_every_adapter_and_undoes():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=2) as chip:
        noisy = outputs(model)
        calibration = calibrate_(model, RomerConfig(**FAST), text())
        report = calibration.report["ahwa-lora"]
        assert report["source"] == "trained" and report["steps"] >= report["best_step"]
        assert report["holdout_by_check"][0]["step"] == 0
        hand = 0
        for name in chip.on_chip_names():
            shape = chip.shape(name)
            slots, out_dim, in_dim = (1, *shape) if len(shape) == 2 else shape
            hand += slots * (out_dim + 8 * (out_dim + in_dim))  # the column scales, A (8 × in) and B (out × 8)
        assert calibration.digital_weights() == hand == report["parameters"]
        assert calibration.digital_share() == pytest.approx(hand / chip.total_parameters)
        first = outputs(model)
        assert not torch.equal(first, noisy)
        calibration.remove()
        assert torch.equal(outputs(model), noisy)
        again = calibrate_(model, RomerConfig(**FAST), text())
        assert again.report["ahwa-lora"]["source"] == "memory"  # the same training, not a second one
        assert torch.equal(outputs(model), first)
        again.remove()
    other = build("olmoe")
    with apply_noise_(other, NOISE, seed=2):
        fresh = calibrate_(other, RomerConfig(**FAST), text())
        assert fresh.report["ahwa-lora"]["source"] == "trained"
        assert torch.equal(outputs(other), first)  # trained again from nothing: the same bits
        fresh.remove()


def test_the_disk_cache_is_keyed_by_what_was_trained_and_reused_unchanged_on_another_chip(tmp_path):
    model = build("olmoe")
    config = RomerConfig(**{**FAST, "lora_cache": str(tmp_path)})
    with apply_noise_(model, NOISE, seed=2):
        trained = calibrate_(model, config, text())
        key = trained.report["ahwa-lora"]["key"]
        state = {n: {k: v.clone() for k, v in c.state_dict().items()} for n, c in trained.correction_items()}
        trained.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json", f"{key}.safetensors"]
    assert json.loads((tmp_path / f"{key}.json").read_text())["report"]["steps"] == trained.report["ahwa-lora"]["steps"]
    other = build("olmoe")  # a new process would find only the disk
    with apply_noise_(other, NOISE, seed=5):
        deployed = calibrate_(other, config, text())
        assert deployed.report["ahwa-lora"]["source"] == "disk" and deployed.report["ahwa-lora"]["key"] == key
        for name, correction in deployed.correction_items():
            assert all(torch.equal(v, state[name][k]) for k, v in correction.state_dict().items())
        deployed.remove()
        changed = calibrate_(other, RomerConfig(**{**FAST, "lora_cache": str(tmp_path), "lora_rank": 4}), text())
        assert changed.report["ahwa-lora"]["source"] == "trained" and changed.report["ahwa-lora"]["key"] != key
        changed.remove()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left behind


def test_a_chip_it_trained_on_is_refused_and_the_authors_noise_is_a_choice():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=TRAIN_SEED_BASE + 1):
        with pytest.raises(RomerError, match="never saw"):
            calibrate_(model, RomerConfig(**FAST), text())
        injected = calibrate_(model, RomerConfig(**{**FAST, "lora_train_noise": "ahwa-injection"}), text())
        assert injected.report["ahwa-lora"]["training_noise"] == "ahwa-injection"
        injected.remove()


def test_ahwa_lora_retune_fits_the_deployed_adapters_on_the_chip_without_adding_any():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=2):
        deployed = calibrate_(model, RomerConfig(**FAST), text())
        share, before = deployed.digital_weights(), outputs(model)
        deployed.remove()
        tuned = calibrate_(model, RomerConfig(**{**FAST, "method": "ahwa-lora-retune", "lora_chip_steps": 4,
                                                 "retune_eval_every": 2}), text())
        assert tuned.digital_weights() == share
        record = tuned.report["ahwa-lora-retune"]
        assert record["holdout_kl_after"] <= record["holdout_kl_start"]
        assert (record["best_step"] == 0) == torch.equal(outputs(model), before)
        tuned.remove()


def test_the_training_key_is_the_model_s_not_the_folder_it_was_loaded_from(tmp_path, tiny_moe_dir):
    import shutil

    import romer
    from romer.calibration.methods.ahwa_lora import model_fingerprint

    shutil.copytree(tiny_moe_dir, tmp_path / "elsewhere")
    prints = []
    for folder in (tiny_moe_dir, tmp_path / "elsewhere"):
        model, _ = romer.load_model(str(folder))
        with apply_noise_(model, NOISE, seed=0) as chip:
            prints.append(model_fingerprint(model, chip))
    assert prints[0] == prints[1]
    other = build("olmoe")  # another model
    with apply_noise_(other, NOISE, seed=0) as chip:
        assert model_fingerprint(other, chip) != prints[0]


def test_the_authors_schedule_runs_fixed_epochs_with_adam_a_linear_decay_to_zero_and_a_clip(monkeypatch):
    clipped = []
    original = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda params, norm: clipped.append(norm) or original(params, norm))
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=2):
        calibration = calibrate_(model, RomerConfig(**{**FAST, "lora_eval_every": 100}), text())
        report = calibration.report["ahwa-lora"]
        calibration.remove()
    # 768 tokens: 12 sequences of 64, 3 held out, 9 fit in 2 batches of 8: 3 epochs are 6 steps
    assert (report["schedule"], report["optimizer"], report["steps"], report["best_step"]) == ("authors", "Adam", 6, 6)
    assert report["epochs"] == 3 and report["final_lr"] == 0.0 and clipped == [1.0] * 6
    assert [c["step"] for c in report["holdout_by_check"]] == [0, 6]  # recorded at the end, the final weights kept
    with apply_noise_(model, NOISE, seed=2), pytest.raises(RomerError, match="raise lora_max_steps or lower"):
        calibrate_(model, RomerConfig(**{**FAST, "lora_epochs": 15}), text())


def test_early_stop_is_the_former_variant_and_keeps_its_best_check(monkeypatch):
    model = build("olmoe")
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a: pytest.fail("early-stop here clips nothing"))
    with apply_noise_(model, NOISE, seed=2):
        calibration = calibrate_(model, RomerConfig(**EARLY), text())
        report = calibration.report["ahwa-lora"]
        calibration.remove()
    assert report["optimizer"] == "AdamW" and report["final_lr"] == 1e-2
    best = min(report["holdout_by_check"], key=lambda c: c["holdout"])
    assert report["best_step"] == best["step"]


def test_the_adapters_train_on_the_named_text_and_its_tokens_enter_the_key(tmp_path, tiny_moe_dir):
    import romer
    from romer.data.registry import load_corpus
    from romer.evaluation import tokenize_stream
    from tests.conftest import SAMPLE_TEXT

    train = tmp_path / "train.txt"
    train.write_text(SAMPLE_TEXT * 3)
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    config = {**FAST, "lora_train_data": str(train), "lora_epochs": 0.5, "lora_max_steps": 100, "lora_eval_every": 50}
    tokens = tokenize_stream(tokenizer, load_corpus(str(train)).text)
    with apply_noise_(model, NOISE, seed=2):
        named = calibrate_(model, RomerConfig(**config), text() % 290 + 1)
        report = named.report["ahwa-lora"]
        named.remove()
        plain = calibrate_(model, RomerConfig(**{**FAST, "lora_eval_every": 100}), text() % 290 + 1)
        assert plain.report["ahwa-lora"]["key"] != report["key"]
        plain.remove()
    sequences = tokens.numel() // 64
    assert report["train_sequences"] == sequences and report["train_tokens"] == sequences * 64
    assert report["steps"] == round(0.5 * -(-sequences // 8))


def test_training_on_the_evaluation_text_is_refused_in_one_line(tiny_moe_dir, texts, tmp_path):
    from typer.testing import CliRunner

    from romer.cli import app

    evaluation, calibration = texts
    result = CliRunner().invoke(app, ["run", "--model", str(tiny_moe_dir), "--data", str(evaluation), "--calib-data",
                                      str(calibration), "--seeds", "0", "--methods",
                                      f"mine=ahwa-lora@lora_train_data={evaluation}", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "is the evaluation text" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
