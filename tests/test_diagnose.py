"""`romer diagnose`: the oracle routing, the systematic share, the role split, the command line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from romer.evaluation.perplexity import sequence_perplexity
from romer.cli import app
from romer.diagnosis import diagnose
from romer.diagnosis.routing_shift import replaying_routing, systematic_share
from romer.moe.telemetry import RoutingRecorder
from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_

IDEAL = dict(sigma_dev=0.0, temp_shift_per_c=0.0, temp_spread_per_c=0.0, leak_ref_us=0.0)


@pytest.fixture(scope="module")
def model():
    """romer-tiny: a trained model whose perplexity every kind of noise raises (a random one's may fall)."""
    return load_model("romer-tiny")[0]


@pytest.fixture(scope="module")
def calib_text():
    from romer import load_corpus, tokenize_stream

    return tokenize_stream(load_model("romer-tiny")[1], load_corpus("stdlib", "calib").text[:20000])


def sequences(count=8, window=64):
    ids = sequences.ids
    return ids[: count * window].view(count, window)


@pytest.fixture(autouse=True)
def _ids(calib_text):
    sequences.ids = calib_text


def test_replaying_the_clean_routing_on_a_router_only_chip_gives_the_clean_model_back(model):
    clean = sequence_perplexity(model, sequences(), 4)
    with RoutingRecorder(model, logit_every=1) as recorder:
        assert sequence_perplexity(model, sequences(), 4) == clean  # recording observes only
    logits = [recorder.layer_logits(i) for i in range(len(recorder.layers))]
    with apply_noise_(model, NoiseConfig.preset("gaussian", sigma_dev=0.2, roles=("router",)), seed=0):
        noisy = sequence_perplexity(model, sequences(), 4)
        with replaying_routing(model, logits):
            oracle = sequence_perplexity(model, sequences(), 4)
    assert noisy != clean and oracle == pytest.approx(clean, rel=1e-6)


def test_systematic_share_separates_offsets_from_jitter():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(4000, 8, generator=g)
    offsets = torch.randn(8, generator=g)
    assert systematic_share(clean, clean + offsets) == pytest.approx(1.0)
    assert systematic_share(clean, clean + torch.randn(4000, 8, generator=g)) < 0.01
    mixed = clean + offsets + torch.randn(4000, 8, generator=g) * offsets.pow(2).mean().sqrt()
    assert 0.4 < systematic_share(clean, mixed) < 0.6


def test_diagnosis_of_a_router_only_chip_puts_everything_in_routing(model):
    config = NoiseConfig(adc_offset_sigma=20.0, roles=("router",), **IDEAL)
    record = diagnose(model, sequences(), config, [0, 1], batch_size=4)
    assert record["gap"] > 0
    assert record["routing_share"] == pytest.approx(1.0, abs=1e-4)
    assert list(record["role_gap"]) == ["router"] and record["role_gap"]["router"] == pytest.approx(record["gap"])
    assert record["systematic_share"] > 0.5  # column offsets shift each expert's logit alike for every token
    assert 0 < record["ceiling"] <= 1 and "recover at most about" in record["verdict"]


def test_diagnosis_splits_the_gap_by_role(model):
    config = NoiseConfig.preset("gaussian", sigma_dev=0.1)
    record = diagnose(model, sequences(), config, [0], batch_size=4)
    assert set(record["role_gap"]) == {"attention", "experts", "router"}  # OLMoE has no dense MLP or shared experts
    assert sum(record["role_share"].values()) == pytest.approx(1.0)
    assert len(record["layers"]) == 4 and len(record["per_seed"]) == 1
    for layer in record["layers"]:
        assert 0 <= layer["systematic_share"] <= 1 and 0 <= layer["topk_agreement"] <= 1
        assert layer["router_input_outlier_ratio"] >= 1
    clean = sequence_perplexity(model, sequences(), 4)
    with apply_noise_(model, config.model_copy(update={"roles": ("attention",)}), seed=0):
        attention_only = sequence_perplexity(model, sequences(), 4)
    assert record["role_gap"]["attention"] == pytest.approx(attention_only - clean)


def test_diagnose_command(tmp_path):
    runner = CliRunner()
    args = ["diagnose", "--noise", "gaussian:sigma_dev=0.1", "--seeds", "0,1", "--tokens", "512", "--window", "64"]
    result = runner.invoke(app, [*args, "--json", "--out", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["seeds"] == [0, 1] and record["tokens"] == 512
    assert (record["calib_dataset"]["name"], record["calib_dataset"]["split"]) == ("stdlib", "calib")
    assert json.loads((tmp_path / "d" / "diagnosis.json").read_text()) == record
    assert (tmp_path / "d" / "role_gaps.png").read_bytes()[:4] == b"\x89PNG"
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "recover at most about" in table.stdout
    for extra, message in ((["--tokens", "1"], "--tokens must be at least 2"),
                           (["--noise", "nope"], "unknown noise preset 'nope'"),
                           (["--tokens", "10"], "fewer than one window of 64")):
        bad = runner.invoke(app, [*args, *extra])
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output
