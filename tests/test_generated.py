"""Calibration text the clean model writes: seeded, cached by model and recipe, never the evaluation text."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import romer
from romer import NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration.persist import save_calibrated
from romer.cli import app
from romer.data.calibration_text import CalibrationSource
from romer.data.generated import cache_key, choose, generate_ids, parse_recipe, write_ids
from romer.errors import RomerError
from romer.evaluation import tokenize_stream

RECIPE = "generated:256@sequence=32@batch=4"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROMER_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny(tiny_moe_dir):
    return romer.load_model(str(tiny_moe_dir))


def test_the_same_seed_writes_the_same_bits_and_another_seed_other_text(tiny):
    model, tokenizer = tiny
    recipe = parse_recipe(RECIPE)
    first, again = write_ids(model, tokenizer, recipe, progress=False), write_ids(model, tokenizer, recipe, False)
    assert torch.equal(first, again) and first.numel() == 256 and first.dtype == torch.long
    other = write_ids(model, tokenizer, recipe.model_copy(update={"seed": 1}), progress=False)
    assert (other != first).float().mean() > 0.5
    shorter = write_ids(model, tokenizer, recipe.model_copy(update={"tokens": 96}), progress=False)
    assert shorter.numel() == 128  # whole batches: 3 sequences asked, a batch of 4 written
    assert torch.equal(shorter, first[:128])  # a shorter draw is a prefix, bit for bit


def test_the_first_token_is_uniform_over_ordinary_tokens_and_greedy_steps_take_the_argmax(tiny):
    model, tokenizer = tiny
    recipe = parse_recipe("generated:4000@sequence=2@batch=500@greedy=1")
    ids = write_ids(model, tokenizer, recipe, progress=False).view(-1, 2)
    firsts = ids[:, 0]
    assert not set(firsts.tolist()) & set(tokenizer.all_special_ids)
    counts = torch.bincount(firsts, minlength=300)[1:].float()  # token 0 is special here
    expected = firsts.numel() / counts.numel()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < counts.numel() + 4 * (2 * counts.numel()) ** 0.5  # chi-square with 298 dof, about 4 sigma
    with torch.no_grad():
        logits = model(input_ids=firsts.unsqueeze(1)).logits[:, -1]
    assert torch.equal(ids[:, 1], logits.argmax(-1))


def test_sampling_follows_the_tempered_nucleus_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    recipe = parse_recipe("generated@temperature=1@top_p=0.8")
    drawn = choose(logits.expand(20000, -1), uniforms, recipe, greedy=False)
    share = torch.bincount(drawn, minlength=4).float() / 20000
    assert share[2:].sum() == 0  # 0.5 + 0.3 holds 0.8: the rest is cut
    assert abs(share[0] - 0.5 / 0.8) < 0.015 and abs(share[1] - 0.3 / 0.8) < 0.015
    hot = choose(logits.expand(20000, -1), uniforms, parse_recipe("generated@temperature=2"), greedy=False)
    tempered = torch.softmax(logits[0] / 2, -1)
    assert torch.allclose(torch.bincount(hot, minlength=4).float() / 20000, tempered, atol=0.015)


def test_the_cache_is_keyed_by_model_and_recipe_and_read_back(tiny, tiny_moe_dir, tmp_path, monkeypatch):
    model, tokenizer = tiny
    recipe = parse_recipe(RECIPE)
    written = generate_ids(model, tokenizer, recipe, window=32, cache=tmp_path / "c", progress=False)
    assert len(list((tmp_path / "c").glob("*.json"))) == 1
    from romer.data import generated

    write = generated.write_ids
    monkeypatch.setattr(generated, "write_ids", lambda *a, **k: pytest.fail("the cache was not read"))
    assert torch.equal(generate_ids(model, tokenizer, recipe, window=32, cache=tmp_path / "c"), written)
    shorter = generate_ids(model, tokenizer, recipe.model_copy(update={"tokens": 100}), window=32, cache=tmp_path / "c")
    assert torch.equal(shorter, written[:100])  # one file per recipe; a shorter count reads its prefix
    asked = []
    monkeypatch.setattr(generated, "write_ids", lambda *a, **k: asked.append(k["first_batch"]) or write(*a, **k))
    longer = generate_ids(model, tokenizer, recipe.model_copy(update={"tokens": 400}), window=32, cache=tmp_path / "c")
    assert asked == [2]  # only the batches the cache lacks are written
    fresh = write(model, tokenizer, recipe.model_copy(update={"tokens": 400, "sequence": 32}), progress=False)
    assert torch.equal(longer, fresh[:400]) and len(list((tmp_path / "c").glob("*.json"))) == 1
    sized = recipe.model_copy(update={"sequence": 32})
    assert cache_key(model, sized) != cache_key(model, sized.model_copy(update={"temperature": 0.9}))
    other, _ = romer.load_model(str(tiny_moe_dir))
    assert cache_key(other, sized) == cache_key(model, sized)
    with torch.no_grad():
        other.model.layers[1].mlp.gate.weight.add_(1e-3)
    assert cache_key(other, sized) != cache_key(model, sized)


def test_no_evaluation_token_reaches_the_fit(tiny, texts, monkeypatch):
    """The generated stream is the same whatever the evaluation text, and the fit receives exactly that stream."""
    evaluation, calibration = texts
    model, tokenizer = tiny
    source = CalibrationSource.parse(RECIPE, str(evaluation))
    alone = source.token_ids(model, tokenizer, 32, tokenize_stream)
    elsewhere = CalibrationSource.parse(RECIPE, str(calibration)).token_ids(model, tokenizer, 32, tokenize_stream)
    assert torch.equal(alone, elsewhere)
    mixed = CalibrationSource.parse(f"{calibration}+{RECIPE}", str(evaluation))
    stream = mixed.token_ids(model, tokenizer, 32, tokenize_stream)
    own = tokenize_stream(tokenizer, calibration.read_text())
    assert torch.equal(stream[: own.numel()], own) and torch.equal(stream[own.numel():], alone)
    assert "written by the clean model" in mixed.describe(stream)["split"]
    seen = []
    from romer.calibration import pipeline

    original = pipeline.CalibrationTokens.split
    monkeypatch.setattr(pipeline.CalibrationTokens, "split",
                        classmethod(lambda cls, ids, *a: seen.append(ids.clone()) or original(ids, *a)))
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--model", str(model.name_or_path), "--data", str(evaluation),
                                 "--calib-data", RECIPE, "--noise", "gaussian:sigma_dev=0.1", "--method", "rc",
                                 "--max-tokens", "64", "--json"])
    assert result.exit_code == 0, result.stderr
    assert seen and all(torch.equal(ids, alone) for ids in seen)
    record = json.loads(result.stdout)
    assert record["calib_data"]["name"].startswith("generated:256@sequence=32")


def test_a_calibration_on_generated_text_saves_and_reloads_bit_for_bit(tiny_moe_dir, tmp_path):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    tokens = CalibrationSource.parse("generated:768@sequence=64", "stdlib").token_ids(model, tokenizer, 64,
                                                                                          tokenize_stream)
    noise = NoiseConfig.preset("cim-80c")
    config = RomerConfig(method="retune", calib_tokens=768, window=64, retune_steps=6, retune_eval_every=3)
    probe = tokens[:256].view(-1, 64)
    with apply_noise_(model, noise, seed=3) as chip:
        calibration = calibrate_(model, config, tokens, chip=chip)
        with torch.no_grad():
            tuned = model(input_ids=probe).logits
        save_calibrated(model, tokenizer, calibration, tmp_path / "saved")
        calibration.remove()
    reloaded, _ = romer.load_model(str(tmp_path / "saved"))
    carried = romer.load_calibration(reloaded, tmp_path / "saved")
    with apply_noise_(reloaded, noise, seed=3, calibration=carried), torch.no_grad():
        assert torch.equal(reloaded(input_ids=probe).logits, tuned)


@pytest.mark.parametrize("spec, message", [
    ("generated:lots", "token count after 'generated:' must be a whole number"),
    ("generated:64@temperature=0", "generated-text setting 'temperature'"),
    ("generated:64@colour=blue", "unknown generated-text setting 'colour'"),
    ("generated:64@top_p", "is not key=value"),
    ("calib++generated:64", "has an empty part"),
])
def test_a_bad_generated_spec_is_one_line(tiny_moe_dir, texts, spec, message):
    evaluation, _ = texts
    result = CliRunner().invoke(app, ["calibrate", "--model", str(tiny_moe_dir), "--data", str(evaluation),
                                      "--calib-data", spec, "--method", "rc", "--max-tokens", "0"])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_recipe_refuses_sequences_too_short(tiny):
    model, tokenizer = tiny
    with pytest.raises(RomerError, match="too short"):
        generate_ids(model, tokenizer, parse_recipe("generated:8@sequence=1"), window=32)
