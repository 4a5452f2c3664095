"""Every family's adapter reproduces its stock router, and changes exactly what it says."""

import pytest
import torch

from romer.errors import RomerError
from romer.moe.adapter import adapter_for
from tests.families import BUILDERS, build

FAMILIES = sorted(BUILDERS)


def tokens(n=24, seed=1):
    return torch.randint(1, 128, (2, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_are_found(family):
    model = build(family)
    layers = adapter_for(model).layers(model)
    expected = model.config.num_hidden_layers - getattr(model.config, "first_k_dense_replace", 0)
    assert len(layers) == expected and all(layer.num_experts == 8 and layer.top_k == 2 for layer in layers)


@pytest.mark.parametrize("family", FAMILIES)
def test_routing_from_logits_reproduces_the_stock_router(family):
    model = build(family)
    adapter = adapter_for(model)
    hidden = torch.randn(2, 20, model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    for layer in adapter.layers(model):
        with torch.no_grad():
            stock = adapter.read_router_output(layer, layer.router(hidden))
            logits = adapter.router_logits(layer, hidden)
            weights, indices = adapter.route(layer, logits)
        assert torch.equal(indices, stock.indices)
        assert torch.allclose(weights, stock.weights, atol=1e-6)
        if stock.logits is not None:
            assert torch.equal(logits, stock.logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_override_leaves_the_forward_bit_identical(family):
    model = build(family)
    adapter = adapter_for(model)
    with torch.no_grad():
        stock = model(input_ids=tokens()).logits
        layers = adapter.layers(model)
        from contextlib import ExitStack
        with ExitStack() as stack:
            for layer in layers:
                stack.enter_context(adapter.override_routing(layer, lambda z: z))
            overridden = model(input_ids=tokens()).logits
        after = model(input_ids=tokens()).logits
    assert torch.equal(stock, overridden) and torch.equal(stock, after)


@pytest.mark.parametrize("family", FAMILIES)
def test_override_changes_the_routing(family):
    model = build(family)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[0]
    with torch.no_grad():
        stock = model(input_ids=tokens()).logits
        forced = torch.full((8,), -1e4)
        forced[5] = 1e4  # every token must pick expert 5 (softmax and sigmoid routers alike)
        chosen = []
        hook = layer.router.register_forward_hook(lambda m, a, out: chosen.append(adapter.read_router_output(layer, out)))
        with adapter.override_routing(layer, lambda z: z + forced.to(z.dtype)):
            changed = model(input_ids=tokens()).logits
        hook.remove()
    assert not torch.equal(stock, changed)
    assert (chosen[0].indices == 5).any(dim=-1).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("router_row", [False, True])
def test_copy_expert_changes_exactly_the_target_slot(family, router_row):
    from romer.calibration.replacement import Replacement, write_replacement

    model = build(family)
    adapter = adapter_for(model)
    layer = adapter.layers(model)[-1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    pairing = "clone" if router_row else "weights"
    with torch.no_grad():
        write_replacement(adapter, layer, Replacement(layer.index, cold=6, hot=2, pairing=pairing, cold_share=0.0,
                                                      hot_share=1.0), chip=None)
    view = lambda module, attr, slot: getattr(module, attr) if slot is None else getattr(module, attr)[slot]  # noqa
    for copy, hot in zip(adapter.expert_weights(layer, 6), adapter.expert_weights(layer, 2)):
        assert torch.equal(view(*copy), view(*hot))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    changed |= {n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])}
    expected_prefix = layer.name + "."
    assert changed and all(n.startswith(expected_prefix) for n in changed)
    for name, param in model.named_parameters():
        if name in changed:
            diff = (param != before[name])
            rows = diff.reshape(diff.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            if param.dim() == 3 or (router_row and ".gate." in name):
                assert rows == [6], name  # only slot 6 (or router row 6) differs
    router_changed = any(".gate." in n for n in changed)
    assert router_changed == router_row


def test_unknown_family_names_the_supported_ones(tiny_moe_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                         intermediate_size=8))
    with pytest.raises(RomerError, match="no MoE adapter for model type 'llama'; supported: deepseek, deepseek_v2"):
        adapter_for(model)


def test_a_family_with_names_of_its_own_is_read_by_its_adapter_alone():
    """Where a block keeps its router and experts, and which layers are attention's, is the adapter's knowledge: a
    family that calls them `switch`, `ffn_bank` and `mixer` is found and mapped to roles once its adapter names them,
    and not before (the shared conventions find nothing)."""
    from types import SimpleNamespace

    from torch import nn

    from romer.moe.adapter import MoeAdapter, register_adapter, unregister_adapter
    from romer.noise.roles import on_chip_tensors

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.switch = nn.Linear(16, 4, bias=False)
            self.ffn_bank = nn.ModuleList(nn.Linear(16, 16, bias=False) for _ in range(4))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.mixer = nn.Linear(16, 16, bias=False)
            self.moe = Block()

    class OddModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(model_type="odd_moe_test")
            self.layers = nn.ModuleList(Layer() for _ in range(2))
            self.head = nn.Linear(16, 32, bias=False)

        def get_output_embeddings(self):
            return self.head

    model = OddModel()
    every_role = ("router", "experts", "attention", "dense_mlp", "lm_head")
    before = {t.name: t.role for t in on_chip_tensors(model, every_role)}
    assert set(before.values()) == {"dense_mlp", "lm_head"}  # no block, no attention under the shared names

    @register_adapter
    class OddFamily(MoeAdapter):
        family = "odd"
        model_types = ("odd_moe_test",)
        router_attrs = ("switch",)
        experts_attr = "ffn_bank"
        attention_markers = ("mixer",)

        def top_k(self, router):
            return 2

    try:
        roles = {t.name: t.role for t in on_chip_tensors(model, every_role)}
        layers = adapter_for(model).layers(model)
    finally:
        unregister_adapter("odd_moe_test")
    assert [(layer.name, layer.num_experts, layer.top_k) for layer in layers] == [("layers.0.moe", 4, 2),
                                                                                  ("layers.1.moe", 4, 2)]
    assert roles["layers.0.moe.switch.weight"] == "router"
    assert roles["layers.1.moe.ffn_bank.3.weight"] == "experts"
    assert roles["layers.0.mixer.weight"] == "attention"
    assert roles["head.weight"] == "lm_head"
    assert sorted(set(roles.values())) == ["attention", "experts", "lm_head", "router"]
