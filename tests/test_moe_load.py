import math

import pytest
import torch

from romer.evaluation import expert_load, tokenize_stream
from romer.models import load_model
from romer.moe import RoutingRecorder, load_metrics


def test_balanced_counts():
    m = load_metrics(torch.tensor([5, 5, 5, 5]))
    assert m.frequency == [0.25] * 4
    assert m.cv == 0 and m.gini == 0 and m.entropy == pytest.approx(1.0)
    assert m.min_share == m.max_share == 1.0 and m.starved == 0


def test_skewed_counts_against_hand_computed_values():
    counts = torch.tensor([1, 1, 2, 6])  # shares 0.1 0.1 0.2 0.6
    m = load_metrics(counts)
    shares = [0.1, 0.1, 0.2, 0.6]
    mean = 0.25
    assert m.cv == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in shares) / 4) / mean)
    assert m.entropy == pytest.approx(-sum(s * math.log(s) for s in shares) / math.log(4))
    mean_abs_diff = sum(abs(a - b) for a in shares for b in shares) / 16
    assert m.gini == pytest.approx(mean_abs_diff / (2 * mean))
    assert m.min_share == pytest.approx(0.4) and m.max_share == pytest.approx(2.4)
    assert m.starved == 2  # 0.1 < 0.125 = half of uniform


def test_dead_expert_counts_as_starved():
    m = load_metrics(torch.tensor([0, 4, 4, 4]))
    assert m.starved == 1 and m.min_share == 0 and m.entropy < 1


def test_recorder_counts_every_selection_and_leaves_the_forward_unchanged(tiny_moe_dir, sample_txt):
    model, tokenizer = load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:128].view(2, 64)
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with RoutingRecorder(model) as recorder:
            recorded = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    assert torch.equal(plain, recorded) and torch.equal(plain, after)
    assert [int(c.sum()) for c in recorder.counts] == [128 * 2, 128 * 2]  # tokens × top-k, per layer
    assert all(sum(m.frequency) == pytest.approx(1.0) for m in recorder.metrics())
    assert not any(layer.router._forward_hooks for layer in recorder.layers)


def test_expert_load_routes_each_complete_chunk_once(tiny_moe_dir, sample_txt):
    model, tokenizer = load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:100]
    metrics = expert_load(model, ids, window=32, batch_size=2)
    assert len(metrics) == 2
    with RoutingRecorder(model) as recorder, torch.no_grad():
        model(input_ids=ids[:96].view(3, 32))
    assert [m.frequency for m in metrics] == [m.frequency for m in recorder.metrics()]
