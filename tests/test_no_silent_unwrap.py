"""An on-chip weight never silently leaves the chip: a product romer does not simulate is a one-line error."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from romer import NoiseConfig, apply_noise_
from romer.errors import RomerError
from romer.noise.digital import ColumnCorrection
from tests.families import build

PER_FORWARD = NoiseConfig.preset("ideal", read_sigma=0.01)  # every forward must see the chip


def ids() -> torch.Tensor:
    return torch.randint(1, 128, (2, 16), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("product", [
    lambda x, w: torch.matmul(x, w.t()), lambda x, w: x @ w.T, lambda x, w: torch.mm(x, w.transpose(0, 1)),
    lambda x, w: torch.einsum("ni,oi->no", x, w), lambda x, w: F.linear(x, w.view(w.shape)),
    lambda x, w: torch.bmm(x.unsqueeze(0), w.t().unsqueeze(0))])
def test_a_product_romer_does_not_simulate_is_refused(product):
    model = build("olmoe")
    with apply_noise_(model, PER_FORWARD, seed=0) as chip:
        name = next(n for n in chip.on_chip_names() if len(chip.shape(n)) == 2)
        module, attribute = chip.module_of(name)
        weight = getattr(module, attribute)
        x = torch.randn(3, weight.shape[1])
        assert F.linear(x, weight).shape == (3, weight.shape[0])  # the product romer simulates
        assert weight.float().abs().max() > 0  # casts and statistics still work
        with pytest.raises(RomerError, match=name) as error:
            product(x, weight)
        assert "\n" not in str(error.value)


def test_fused_expert_kernels_on_a_chip_are_refused_not_run_clean():
    model = build("olmoe")
    with apply_noise_(model, PER_FORWARD, seed=0):
        model.set_experts_implementation("grouped_mm")  # what a user might do after programming
        with pytest.raises(RomerError, match="mm"):
            model(input_ids=ids())
        model.set_experts_implementation("eager")
        model(input_ids=ids())


def test_a_correction_on_a_fused_tensor_switches_a_quiet_chip_to_a_path_that_applies_it():
    """A chip without per-forward effects keeps the model's fused kernels until a digital correction sits on a fused
    expert tensor: a per-column gain and offset then run in romer's grouped kernel, an adapter in the eager experts, so
    the correction acts (before, the model's fused kernel skipped it)."""
    from romer.noise.fused_experts import NAME

    model = build("olmoe")
    implementation = model.config._experts_implementation
    with torch.no_grad():
        with apply_noise_(model, NoiseConfig.preset("gaussian"), seed=0) as chip:
            assert model.config._experts_implementation == implementation
            name = next(n for n in chip.on_chip_names() if len(chip.shape(n)) == 3)
            before = model(input_ids=ids()).logits
            slots, out_dim, in_dim = chip.shape(name)
            correction = ColumnCorrection(out_dim, in_dim, slots, columns=True, rank=0, seed=0)
            with torch.no_grad():
                correction.offset.fill_(0.5)
            chip.attach_correction(name, correction)
            assert model.config._experts_implementation == NAME
            columns = model(input_ids=ids()).logits
            assert not torch.allclose(columns, before)
            chip.use_eager_experts()
            assert torch.allclose(model(input_ids=ids()).logits, columns, rtol=1e-4, atol=1e-5)
            adapter = ColumnCorrection(out_dim, in_dim, slots, columns=True, rank=2, seed=0)
            chip.attach_correction(name, adapter)
            assert model.config._experts_implementation == "eager"
    assert model.config._experts_implementation == implementation  # restored with the chip


def test_analog_mode_in_token_chunks_is_bit_identical_and_bounded(monkeypatch):
    """Analog mode computes its per-tile partial sums in chunks of tokens (at most MAX_PARTIAL_BYTES each): the same
    chip seed gives the same outputs, ADC noise included, whatever the chunk."""
    import romer.noise.analog as analog

    config = NoiseConfig.preset("cim-80c", mode="analog", tile_rows=16, ir_drop=1.0)
    model = build("olmoe")
    with torch.no_grad():
        with apply_noise_(model, config, seed=1):
            whole = model(input_ids=ids()).logits
        assert analog.tokens_per_chunk(4, 64) > 32  # the whole batch is one chunk by default
        monkeypatch.setattr(analog, "MAX_PARTIAL_BYTES", 1)  # the smallest chunk: 16 tokens
        assert analog.tokens_per_chunk(4, 64) == 16
        with apply_noise_(model, config, seed=1):
            chunked = model(input_ids=ids()).logits
    assert torch.equal(whole, chunked)


@pytest.mark.parametrize("family", ["olmoe", "qwen2_moe", "mixtral", "deepseek_v3", "qwen3_moe", "deepseek_v2"])
def test_fused_experts_with_column_offsets_equal_the_eager_path(family):
    """A weights-mode chip whose only per-forward effect is its column offsets keeps the experts fused (offsets added
    per expert after the grouped product): the same chip seed gives the eager path's logits to float rounding."""
    model = build(family)
    config = NoiseConfig.preset("cim-80c", adc_offset_sigma=4.0)  # offsets large enough to matter
    with torch.no_grad(), apply_noise_(model, config, seed=2) as chip:
        assert chip.experts_path() == "fused, offsets per expert"
        fused = model(input_ids=ids()).logits
        chip.use_eager_experts()
        assert chip.experts_path() == "eager"
        eager = model(input_ids=ids()).logits
    with torch.no_grad(), apply_noise_(model, config.model_copy(update={"adc_offset_sigma": 0.0,
                                                                        "adc_offset_per_c": 0.0}), seed=2):
        without_offsets = model(input_ids=ids()).logits
    assert torch.allclose(fused, eager, rtol=1e-4, atol=1e-5 * float(eager.abs().max()))
    assert not torch.allclose(fused, without_offsets, rtol=1e-3, atol=1e-3)  # the offsets do act
