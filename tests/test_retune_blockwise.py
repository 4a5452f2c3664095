"""Block-wise `retune`: each decoder layer fitted on its cached inputs, one block's activations at a time; the same
digital parts, counts and undo as the end-to-end fit; the same chip seed gives the same bits (save/load: test_retune.py)."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from romer import NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration.blocks import decoder_layers, first_layer_inputs
from romer.errors import RomerError
from tests.families import build

NOISE = NoiseConfig.preset("cim-80c", adc_offset_sigma=2.0)
BLOCKWISE = dict(method="retune", retune_engine="blockwise", calib_tokens=64 * 12, window=64, retune_block_steps=12,
                 retune_eval_every=4, retune_budget=0.05)
END_TO_END = dict(method="retune", retune_engine="end_to_end", calib_tokens=64 * 12, window=64, retune_steps=12,
                  retune_eval_every=4, retune_budget=0.05, retune_checkpointing="off")


def ids(seed: int = 1, tokens: int = 64 * 12) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def outputs(model, tokens=None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=(ids(7, 64 * 4) if tokens is None else tokens).view(-1, 64)).logits


def test_a_replayed_block_gives_the_model_s_own_hidden_states():
    model = build("olmoe")
    sequences = ids().view(-1, 64)
    with torch.no_grad():
        hidden = model(input_ids=sequences[:4], output_hidden_states=True).hidden_states
    inputs = first_layer_inputs(model, sequences[:4], batch_size=4)
    assert torch.allclose(inputs.hidden[0], hidden[0].float())
    for index, (_, layer) in enumerate(decoder_layers(model)[:-1]):  # the last state is after the final norm
        inputs = inputs.through(layer, "cpu")
        assert torch.allclose(inputs.hidden[0], hidden[index + 1].float(), atol=1e-5)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "deepseek_v3"])
def test_blockwise_fit_lowers_each_block_s_error_moves_only_digital_parameters_and_undoes(family):
    model = build(family)
    with apply_noise_(model, NOISE, seed=2) as chip:
        on_chip = {name: getattr(*chip.module_of(name)).detach().clone() for name in chip.names()}
        noisy = outputs(model)
        calibration = calibrate_(model, RomerConfig(**BLOCKWISE), ids())
        report = calibration.report["retune"]
        assert report["engine"] == "blockwise"
        blocks = report["blockwise"]["blocks"]
        assert [b["block"] for b in blocks[:-1]] == [name for name, _ in decoder_layers(model)]
        for block in blocks:
            if block.get("steps"):
                assert block["holdout_loss_after"] <= block["holdout_loss_start"]
        assert sum(b["holdout_loss_after"] < b["holdout_loss_start"] for b in blocks) >= len(blocks) // 2
        assert report["holdout_kl_after"] < report["holdout_kl_before"]
        assert report["parameters_added"] == calibration.digital_weights() <= report["budget_parameters"]
        for name, weight in on_chip.items():
            assert torch.equal(getattr(*chip.module_of(name)), weight), name  # no conductance changed
        calibration.remove()
        assert torch.equal(outputs(model), noisy)
        assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_the_same_chip_seed_gives_the_same_bits():
    def fitted() -> dict:
        model = build("olmoe")
        with apply_noise_(model, NOISE, seed=5):
            calibration = calibrate_(model, RomerConfig(**BLOCKWISE), ids())
            state = {f"{name}.{k}": v.clone() for name, c in calibration.correction_items()
                     for k, v in c.state_dict().items()}
            state["logits"] = outputs(model)
            calibration.remove()
        return state

    first, second = fitted(), fitted()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _saved_bytes_per_step(model, config) -> int:
    """The most bytes autograd saves for the backward pass within one optimiser step of the fit."""
    counted, peak = [0], [0]

    def pack(tensor):
        counted[0] += tensor.numel() * tensor.element_size()
        return tensor

    def after_step(optimizer, args, kwargs):
        peak[0] = max(peak[0], counted[0])
        counted[0] = 0

    handle = register_optimizer_step_post_hook(after_step)
    try:
        with apply_noise_(model, NOISE, seed=2), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            calibrate_(model, RomerConfig(**config), ids()).remove()
    finally:
        handle.remove()
    return peak[0]


def test_a_blockwise_step_keeps_one_block_s_activations():
    """The memory bound: what one step keeps for its backward pass is one decoder layer's activations (the end-to-end
    step keeps every layer's, the head's and the logits'), so it is at most the end-to-end step's share per layer."""
    layers = len(decoder_layers(build("olmoe")))
    blockwise = _saved_bytes_per_step(build("olmoe"), BLOCKWISE)
    end_to_end = _saved_bytes_per_step(build("olmoe"), END_TO_END)
    assert 0 < blockwise <= end_to_end / layers


def test_an_option_the_engine_does_not_read_is_refused():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        with pytest.raises(RomerError, match="retune_steps"):
            calibrate_(model, RomerConfig(**(BLOCKWISE | {"retune_steps": 10})), ids())
        with pytest.raises(RomerError, match="retune_block_steps"):
            calibrate_(model, RomerConfig(**(END_TO_END | {"retune_block_steps": 10})), ids())
