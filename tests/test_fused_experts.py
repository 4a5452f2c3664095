"""romer's grouped expert kernel (`romer_chip`): on a chip whose only per-forward effect is the column offsets, fused
expert tensors keep the grouped product and equal the eager per-expert path, in values and in gradients, for every
family with fused experts, including experts no token is routed to and routing weights that differ per token."""

from __future__ import annotations

import pytest
import torch

from romer import NoiseConfig, apply_noise_
from romer.noise.fused_experts import chip_experts_forward, fused_path_possible
from tests.families import build

FAMILIES = ["olmoe", "qwen2_moe", "mixtral", "qwen3_moe"]


def tokens(count: int = 96) -> torch.Tensor:
    return torch.randint(1, 128, (2, count // 2), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_grouped_kernel_equals_the_eager_experts_on_a_chip_with_offsets(family):
    model = build(family)
    assert fused_path_possible(model)
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=4.0)
    with torch.no_grad(), apply_noise_(model, config, seed=1) as chip:
        assert chip.experts_path() == "fused, offsets per expert"
        fused = model(input_ids=tokens()).logits
        chip.use_eager_experts()
        assert chip.experts_path() == "eager"
        eager = model(input_ids=tokens()).logits
    assert torch.allclose(fused, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))
    with torch.no_grad():
        clean = model(input_ids=tokens()).logits
    assert not torch.allclose(fused, clean, rtol=1e-3, atol=1e-3)  # the chip acts


def test_gradients_reach_the_inputs_as_the_eager_path_sends_them():
    model = build("olmoe")
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=4.0)
    with apply_noise_(model, config, seed=1) as chip:
        grads = []
        for eager in (False, True):
            if eager:
                chip.use_eager_experts()
            embeds = model.get_input_embeddings()(tokens()).detach().requires_grad_(True)
            model(inputs_embeds=embeds).logits.float().pow(2).mean().backward()
            grads.append(embeds.grad)
            model.zero_grad(set_to_none=True)
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-6 * float(grads[1].abs().max()))


def test_an_expert_no_token_reaches_and_per_token_weights_are_handled():
    """Called directly on one experts module of the clean model: the grouped product against a loop over experts."""
    model = build("olmoe")
    experts = next(m for m in model.modules() if hasattr(m, "has_gate") and hasattr(m, "is_transposed"))
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, model.config.hidden_size, generator=generator)
    index = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 3], [3, 0], [0, 1], [1, 3]])  # experts 2, 4.. get nothing
    weights = torch.rand(7, 2, generator=generator)
    with torch.no_grad():
        out = chip_experts_forward(experts, hidden, index, weights)
        expected = torch.zeros_like(hidden)
        for row in range(7):
            for k in range(2):
                e = int(index[row, k])
                gate, up = (hidden[row] @ experts.gate_up_proj[e].t()).chunk(2)
                expected[row] += weights[row, k] * ((torch.nn.functional.silu(gate) * up) @ experts.down_proj[e].t())
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-6)
