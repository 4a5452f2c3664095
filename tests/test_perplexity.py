import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from romer.errors import RomerError
from romer.evaluation import perplexity, sliding_windows, tokenize_stream
from romer.models import load_model


@given(tokens=st.integers(2, 400), window=st.integers(2, 64), stride_fraction=st.floats(0.01, 1.0))
@settings(max_examples=300, deadline=None)
def test_each_token_is_scored_at_most_once_and_all_are_with_overlap(tokens, window, stride_fraction):
    if tokens < window:
        return
    stride = max(1, int(window * stride_fraction))
    scored = []
    for w in sliding_windows(tokens, window, stride):
        assert w.end - w.begin <= window and w.begin < w.score_from <= w.end
        scored.extend(range(w.score_from, w.end))
    if stride < window:
        assert scored == list(range(1, tokens))
    else:  # disjoint windows: a window's first token has no context inside it and is not scored
        assert scored == [p for p in range(1, tokens) if p % window]


def hf_guide_reference(model, ids: torch.Tensor, window: int, stride: int) -> float:
    """The loop of Hugging Face's perplexity guide, one window at a time, with the model's own loss."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    seq_len = ids.numel()
    for begin in range(0, seq_len, stride):
        end = min(begin + window, seq_len)
        trg_len = end - prev_end
        input_ids = ids[begin:end].unsqueeze(0)
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids=input_ids, labels=target_ids).loss
        valid = int((target_ids[:, 1:] != -100).sum())  # labels are shifted inside the model
        nll_sum += loss.item() * valid
        n_tokens += valid
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


@pytest.mark.parametrize("window, stride, batch", [(32, 16, 4), (32, 32, 3), (48, 7, 5), (64, 64, 1)])
def test_batched_perplexity_matches_the_guide_loop(tiny_moe_dir, sample_txt, window, stride, batch):
    model, tokenizer = load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:1000]
    result = perplexity(model, ids, window, stride, batch_size=batch)
    assert result.scored_tokens == ids.numel() - 1 - (result.windows - 1 if stride == window else 0)
    assert result.ppl == pytest.approx(hf_guide_reference(model, ids, window, stride), rel=1e-5)


def test_batch_size_does_not_change_the_result(tiny_moe_dir, sample_txt):
    model, tokenizer = load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:700]
    one, many = perplexity(model, ids, 32, 16, batch_size=1), perplexity(model, ids, 32, 16, batch_size=16)
    assert one.ppl == pytest.approx(many.ppl, rel=1e-6)
    assert perplexity(model, ids, 32, 16, batch_size=16).ppl == many.ppl  # deterministic


def test_overlap_gives_context_and_changes_the_score(tiny_moe_dir, sample_txt):
    model, tokenizer = load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:700]
    assert perplexity(model, ids, 32, 8).ppl != perplexity(model, ids, 32, 32).ppl


@pytest.mark.parametrize("tokens, window, stride, message", [
    (10, 32, 16, "the text has 10 tokens, fewer than one window of 32; use a longer text or a smaller --window"),
    (100, 32, 33, "--stride must be between 1 and the window"),
    (100, 32, 0, "--stride must be between 1 and the window"),
    (100, 1, 1, "--window must be at least 2"),
])
def test_window_errors(tokens, window, stride, message):
    with pytest.raises(RomerError, match=message):
        list(sliding_windows(tokens, window, stride))
