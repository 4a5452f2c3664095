"""The embedded model is what its card says it is: a balanced stock OLMoE that loads anywhere."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, OlmoeForCausalLM

from romer.data import load_corpus
from romer.evaluation import default_window, expert_load, perplexity, tokenize_stream
from romer.models import ZOO, load_model

FOLDER = ZOO / "romer-tiny"
CARD = json.loads((FOLDER / "card.json").read_text())


@pytest.fixture(scope="module")
def measured():
    model, tokenizer = load_model("romer-tiny")
    corpus = load_corpus("stdlib", "test")
    ids = tokenize_stream(tokenizer, corpus.text)
    return corpus, ids, model


def test_loads_with_stock_transformers_alone():
    model = AutoModelForCausalLM.from_pretrained(FOLDER)
    tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    assert type(model) is OlmoeForCausalLM
    assert tokenizer.decode(tokenizer("import os\n")["input_ids"]) == "import os\n"


def test_shape_matches_the_spec():
    model, _ = load_model("romer-tiny")
    config = model.config
    assert config.num_experts >= 8 and config.num_experts_per_tok >= 2 and config.num_hidden_layers >= 4
    assert (FOLDER / "model.safetensors").stat().st_size <= 25 * 2**20


def test_every_layer_is_balanced_when_clean(measured):
    corpus, ids, model = measured
    for layer in expert_load(model, ids, default_window(model)):
        assert layer.cv <= 0.35 and layer.min_share >= 0.5 and layer.starved == 0


def test_card_figures_are_what_we_measure(measured):
    corpus, ids, model = measured
    if corpus.sha256 != CARD["test"]["dataset"]["sha256"]:
        pytest.skip("this Python's stdlib differs from the one the card was measured on")
    result = perplexity(model, ids, CARD["test"]["window"], CARD["test"]["stride"])
    assert result.ppl == pytest.approx(CARD["test"]["ppl"], rel=1e-5)
    layers = expert_load(model, ids, CARD["test"]["window"])
    assert [round(m.cv, 6) for m in layers] == [round(layer["cv"], 6) for layer in CARD["load"]]
