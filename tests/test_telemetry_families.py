"""Telemetry on every family: invisible to the forward, counts that add up, fidelity that means what it says."""

import pytest
import torch

from romer.moe import RoutingRecorder, routing_fidelity
from tests.families import BUILDERS, build
from tests.test_moe_adapters import tokens

FAMILIES = sorted(BUILDERS)


@pytest.mark.parametrize("family", FAMILIES)
def test_telemetry_is_bit_identical_and_counts_add_up(family):
    model = build(family)
    with torch.no_grad():
        plain = model(input_ids=tokens()).logits
        with RoutingRecorder(model, keep_choices=True, logit_every=3) as recorder:
            recorded = model(input_ids=tokens()).logits
    assert torch.equal(plain, recorded)
    for index, (layer, metrics) in enumerate(zip(recorder.layers, recorder.metrics())):
        assert sum(metrics.frequency) == pytest.approx(1.0)
        assert int(recorder.counts[index].sum()) == 48 * layer.top_k
        assert recorder.layer_choices(index).shape == (48, layer.top_k)
        assert recorder.layer_logits(index).shape == (16, layer.num_experts)  # tokens 0, 3, ..., 45


@pytest.mark.parametrize("family", ["olmoe", "deepseek"])
def test_fidelity_of_a_capture_with_itself_and_with_another_model(family):
    model = build(family)
    other = build(family, seed=1)
    captures = []
    for m in (model, model, other):
        with torch.no_grad(), RoutingRecorder(m, keep_choices=True, logit_every=1) as recorder:
            m(input_ids=tokens())
        captures.append(recorder)
    same = routing_fidelity(captures[0], captures[1])
    assert all(r["topk_agreement"] == 1 and r["jaccard"] == 1 and r["kl"] == pytest.approx(0, abs=1e-12) for r in same)
    different = routing_fidelity(captures[0], captures[2])
    assert all(r["topk_agreement"] < 1 and r["kl"] > 0 for r in different)
    assert all(r["jaccard"] <= r["topk_agreement"] for r in different)


def test_logit_memory_is_bounded():
    model = build("olmoe")
    with torch.no_grad(), RoutingRecorder(model, logit_every=1, max_logit_rows=10) as recorder:
        model(input_ids=tokens())
        model(input_ids=tokens(seed=3))
    assert all(recorder.layer_logits(i).shape[0] == 10 for i in range(len(recorder.layers)))
