"""apply_noise_ on whole models: reproducible, order-independent, per-slot, exactly restored."""

import pytest
import torch

from romer.errors import RomerError
from romer.models import load_model
from romer.noise import NoiseConfig, apply_noise_
from romer.noise.analog import AnalogWeight
from romer.noise.roles import on_chip_tensors


@pytest.fixture
def model(tiny_moe_dir):
    return load_model(str(tiny_moe_dir))[0]


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def ids():
    return torch.arange(64).remainder(300).view(2, 32)


def test_roles_cover_the_block_matrices(model):
    roles = {t.role for t in on_chip_tensors(model, ("attention", "experts", "router", "lm_head"))}
    assert roles == {"attention", "experts", "router", "lm_head"}
    default = on_chip_tensors(model, NoiseConfig().roles)
    names = [t.name for t in default]
    assert "model.layers.0.mlp.experts.gate_up_proj" in names and "model.layers.0.mlp.gate.weight" in names
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)


def test_same_seed_same_bits_different_seed_differs(model):
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=7):
        first = snapshot(model)
    with apply_noise_(model, config, seed=7):
        second = snapshot(model)
    with apply_noise_(model, config, seed=8):
        third = snapshot(model)
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert not torch.equal(first["model.layers.0.mlp.experts.down_proj"], third["model.layers.0.mlp.experts.down_proj"])


def test_noise_of_a_tensor_does_not_depend_on_which_others_are_noised(model):
    name = "model.layers.1.mlp.experts.down_proj"
    with apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=3):
        everything = snapshot(model)[name]
    with apply_noise_(model, NoiseConfig.preset("cim-80c", roles=("experts",)), seed=3):
        experts_only = snapshot(model)
    assert torch.equal(everything, experts_only[name])
    clean = snapshot(model)
    assert torch.equal(experts_only["model.layers.0.self_attn.q_proj.weight"], clean["model.layers.0.self_attn.q_proj.weight"])


def test_each_expert_slot_has_its_own_tiles_and_stream(model):
    experts = model.model.layers[0].mlp.experts
    config = NoiseConfig.preset("gaussian", roles=("experts",), scaling="tile")
    with apply_noise_(model, config, seed=0):
        before = experts.down_proj[1].detach().clone()
    with torch.no_grad():
        experts.down_proj[0].mul_(100)  # another slot's content and range must not matter
    with apply_noise_(model, config, seed=0):
        after = experts.down_proj[1].detach().clone()
    assert torch.equal(before, after)


@pytest.mark.parametrize("spec", [dict(name="cim-80c"), dict(name="cim-80c", mode="analog"),
                                  dict(name="gaussian", read_sigma=0.02), dict(name="pcm")])
@pytest.mark.parametrize("backup", ["memory", "disk"])
def test_restore_is_bit_exact(model, spec, backup):
    clean = snapshot(model)
    params = dict(model.named_parameters())
    handle = apply_noise_(model, NoiseConfig.preset(**spec), seed=1, backup=backup)
    with torch.no_grad():
        model(input_ids=ids())
    assert not torch.equal(snapshot(model)["model.layers.0.mlp.experts.gate_up_proj"],
                           clean["model.layers.0.mlp.experts.gate_up_proj"])
    handle.restore()
    assert all(torch.equal(clean[n], p) for n, p in model.named_parameters())
    assert all(params[n] is p for n, p in model.named_parameters())  # same Parameter objects
    assert not any(isinstance(p, AnalogWeight) for p in model.parameters())


def test_ideal_chip_changes_nothing(model):
    with torch.no_grad():
        clean = model(input_ids=ids()).logits
        with apply_noise_(model, NoiseConfig.preset("ideal"), seed=0):
            assert torch.equal(model(input_ids=ids()).logits, clean)


def test_bfloat16_noise_is_computed_in_float32_and_rounded_once(tiny_moe_dir):
    low, _ = load_model(str(tiny_moe_dir), dtype="bfloat16")
    high, _ = load_model(str(tiny_moe_dir))
    with torch.no_grad():
        for (_, a), (_, b) in zip(high.named_parameters(), low.named_parameters()):
            a.copy_(b.float())  # same starting weights, held in float32
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(low, config, seed=2), apply_noise_(high, config, seed=2):
        for (name, a), (_, b) in zip(high.named_parameters(), low.named_parameters()):
            assert torch.equal(a.to(torch.bfloat16), b), name


def test_analog_mode_is_close_to_digital_at_high_resolution_and_noisier_at_low(model):
    with torch.no_grad():
        clean = model(input_ids=ids()).logits
        fine = NoiseConfig.preset("ideal", mode="analog", dac_bits=24, adc_bits=24, adc_full_scale=64.0)
        with apply_noise_(model, fine, seed=0):
            fine_out = model(input_ids=ids()).logits
        coarse = NoiseConfig.preset("ideal", mode="analog", dac_bits=4, adc_bits=4)
        with apply_noise_(model, coarse, seed=0):
            coarse_out = model(input_ids=ids()).logits
    fine_err, coarse_err = (fine_out - clean).abs().max(), (coarse_out - clean).abs().max()
    assert fine_err < 1e-3 < coarse_err


def test_analog_adc_outputs_sit_on_the_adc_grid():
    layer = torch.nn.Linear(8, 3, bias=False)
    host = torch.nn.Module()
    host.proj = layer
    config = NoiseConfig.preset("ideal", mode="analog", tile_rows=8, tile_cols=8, scaling="tile",
                                adc_bits=4, adc_full_scale=2.0, roles=("dense_mlp",))
    host.get_output_embeddings = lambda: None
    x = torch.randn(5, 8)
    with apply_noise_(host, config, seed=0) as handle, torch.no_grad():
        y = layer(x)
        scale = handle.program_of("proj.weight").scales[0, 0].item()
    lsb = 2.0 / 7  # 4 bits: 7 levels per side on ±U
    steps = y / (x.abs().amax(-1, keepdim=True) * scale * 25.0) / lsb
    assert torch.allclose(steps, steps.round(), atol=1e-4)


def test_read_noise_changes_every_forward_but_replays_per_seed(model):
    config = NoiseConfig.preset("ideal", read_sigma=0.02)
    with torch.no_grad():
        with apply_noise_(model, config, seed=5):
            a, b = model(input_ids=ids()).logits, model(input_ids=ids()).logits
        with apply_noise_(model, config, seed=5):
            c = model(input_ids=ids()).logits
    assert not torch.equal(a, b) and torch.equal(a, c)


def test_a_model_on_a_chip_cannot_be_programmed_twice(model):
    for mode in ("weights", "analog"):
        with apply_noise_(model, NoiseConfig.preset("gaussian", mode=mode), seed=0):
            with pytest.raises(RomerError, match="already sits on a chip"):
                apply_noise_(model, NoiseConfig.preset("gaussian"), seed=1)


def test_a_cast_weight_stays_on_the_chip():
    """DeepSeek's routers compute F.linear(x.float(), self.weight.type(torch.float32))."""
    class CastingRouter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(2, 16))

        def forward(self, x):
            return torch.nn.functional.linear(x.float(), self.weight.type(torch.float32))

    host = torch.nn.Module()
    host.block = torch.nn.Module()
    host.block.gate = CastingRouter()
    host.block.experts = torch.nn.ModuleList([torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)])
    host.get_output_embeddings = lambda: None
    x = torch.randn(3, 16)
    config = NoiseConfig.preset("ideal", mode="analog", adc_bits=3, roles=("router",))
    assert [t.name for t in on_chip_tensors(host, config.roles)] == ["block.gate.weight"]
    with torch.no_grad():
        digital = host.block.gate(x)
        with apply_noise_(host, config, seed=0):
            analog = host.block.gate(x)
    assert not torch.allclose(analog, digital)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_disk_backup_reads_slots_and_programs_the_same_bits_as_memory(tiny_moe_dir, dtype):
    model, _ = load_model(str(tiny_moe_dir), dtype=dtype)
    clean = snapshot(model)
    fused = "model.layers.0.mlp.experts.gate_up_proj"
    config = NoiseConfig.preset("cim-80c")
    with apply_noise_(model, config, seed=3, backup="memory"):
        in_memory = snapshot(model)
    with apply_noise_(model, config, seed=3, backup="disk") as handle:
        on_disk = snapshot(model)
        assert handle.backup_kind() == "disk"
        assert torch.equal(handle.clean_value(fused, 1), clean[fused][1])  # one slot read back, exactly
        assert torch.equal(handle.clean_value(fused), clean[fused])
    assert all(torch.equal(in_memory[n], on_disk[n]) for n in clean)
    assert not torch.equal(on_disk[fused], clean[fused])
    assert all(torch.equal(clean[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("mode, backup", [("weights", "memory"), ("analog", "memory"), ("weights", "disk")])
def test_suspended_shows_the_clean_twin_and_returns_to_the_same_chip_bit_for_bit(model, mode, backup):
    """The programmed weights wait in a second store while the clean twin runs; afterwards the chip computes what
    it computed right after programming (read noise included: its streams start again, as then)."""
    clean = snapshot(model)
    config = NoiseConfig.preset("cim-80c", mode=mode, read_sigma=0.01)
    chip = apply_noise_(model, config, seed=5, backup=backup)
    replaced = "model.layers.0.mlp.experts.gate_up_proj"
    chip.reprogram_slot(replaced, 1, chip.clean_value(replaced, 0))  # a replacement is part of the twin too
    chip.make_digital("model.layers.1.mlp.gate.weight")
    for name in chip.on_chip_names():
        chip.program_of(name).calls = 0
    programmed, first = snapshot(model), model(input_ids=ids()).logits
    with chip.suspended():
        twin = snapshot(model)
        assert torch.equal(twin[replaced][1], clean[replaced][0])
        assert torch.equal(twin[replaced][0], clean[replaced][0])
        assert all(torch.equal(twin[n], clean[n]) for n in twin if n != replaced)
    assert all(torch.equal(p, programmed[n]) for n, p in snapshot(model).items())
    assert torch.equal(model(input_ids=ids()).logits, first)
    chip.restore()
    assert all(torch.equal(p, clean[n]) for n, p in snapshot(model).items())


def test_a_restored_model_is_freed_once_its_owner_lets_go(tiny_moe_dir):
    """The registry of chips keys models weakly, but each handle holds its model: restore() must drop the entry, or
    every model once put on a chip lives on (at 16 OLMoE layers a reload then ran out of memory)."""
    import gc
    import weakref

    model, _ = load_model(str(tiny_moe_dir))
    alive = weakref.ref(model)
    chip = apply_noise_(model, NoiseConfig.preset("cim-80c"), seed=0)
    chip.restore()
    del model, chip
    gc.collect()
    assert alive() is None
