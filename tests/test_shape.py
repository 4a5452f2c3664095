"""The random-weight model of a published shape, written one layer at a time (issue 42), at a narrow size."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import romer
from romer.errors import RomerError
from romer.scale.shape import RANDOM_WEIGHTS_NOTE, write_random_checkpoint

OLMOE = Path(__file__).parents[1] / "bench" / "configs" / "olmoe-1b-7b"
NARROW = dict(hidden_size=64, intermediate_size=32, num_experts=8, num_experts_per_tok=2, num_attention_heads=4,
              num_key_value_heads=4, vocab_size=512)


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def test_the_shape_loads_as_a_user_would_in_its_dtype(tmp_path):
    folder = write_random_checkpoint(OLMOE, tmp_path / "m", layers=2, dtype="bfloat16", **NARROW)
    assert len(list(folder.glob("model-layer-*.safetensors"))) == 2
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in index  # the published per-expert layout
    model, _ = romer.load_model(str(folder), dtype="bfloat16")
    assert model.config.num_hidden_layers == 2 and next(model.parameters()).dtype == torch.bfloat16
    weights = model.model.layers[1].mlp.experts.gate_up_proj.float()
    assert weights.std().item() == pytest.approx(0.02, rel=0.05) and abs(weights.mean().item()) < 2e-3
    assert torch.equal(model.model.layers[0].input_layernorm.weight.float(), torch.ones(64))
    assert "random" in json.loads((folder / RANDOM_WEIGHTS_NOTE).read_text())["weights"]


def test_same_seed_same_bytes_other_seed_other_bytes_and_a_rerun_resumes(tmp_path):
    first = write_random_checkpoint(OLMOE, tmp_path / "a", layers=1, dtype="float32", **NARROW)
    second = write_random_checkpoint(OLMOE, tmp_path / "b", layers=1, dtype="float32", **NARROW)
    other = write_random_checkpoint(OLMOE, tmp_path / "c", layers=1, dtype="float32", seed=1, **NARROW)
    assert digest(first) == digest(second) != digest(other)
    before = {p.name: p.stat().st_mtime_ns for p in first.glob("*.safetensors")}
    write_random_checkpoint(OLMOE, first, layers=1, dtype="float32", **NARROW)  # every shard there: none rewritten
    assert {p.name: p.stat().st_mtime_ns for p in first.glob("*.safetensors")} == before


def test_a_folder_of_another_recipe_or_a_bad_layer_count_is_refused(tmp_path):
    write_random_checkpoint(OLMOE, tmp_path / "m", layers=1, dtype="float32", **NARROW)
    with pytest.raises(RomerError, match="another recipe"):
        write_random_checkpoint(OLMOE, tmp_path / "m", layers=1, dtype="float32", seed=3, **NARROW)
    with pytest.raises(RomerError, match="outside 1..16"):
        write_random_checkpoint(OLMOE, tmp_path / "n", layers=17, **NARROW)


def test_a_narrow_bfloat16_shape_programs_restores_and_fits_block_by_block(tmp_path):
    """The full-size run's path at a small size: bfloat16 programming and restore bit for bit, `outlier-retune` with
    the block-wise engine and planner, its corrections kept in float32."""
    from romer.calibration import CalibrationConfig, calibrate_
    from romer.noise import apply_noise_, parse_noise_spec

    folder = write_random_checkpoint(OLMOE, tmp_path / "m", layers=2, dtype="bfloat16", **NARROW)
    model, _ = romer.load_model(str(folder), dtype="bfloat16")
    clean = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 512, (64 * 24,), generator=torch.Generator().manual_seed(0))
    config = CalibrationConfig(method="outlier-retune", retune_engine="blockwise", retune_plan="blockwise",
                               retune_block_steps=4, retune_eval_every=2, calib_tokens=64 * 24, window=64,
                               outlier_attention=2.0, retune_budget=0.05)
    with apply_noise_(model, parse_noise_spec("cim-80c"), seed=0) as chip:
        noisy = {name: p.detach().clone() for name, p in model.named_parameters()}
        assert noisy["model.layers.0.mlp.experts.gate_up_proj"].dtype == torch.bfloat16
        calibration = calibrate_(model, config, ids, chip=chip)
        fit = calibration.report["retune"]
        assert 0 < calibration.digital_share() <= 0.055 + 1e-9
        assert fit["plan_tokens"] > 0 and fit["ranks"]  # the block-wise planner placed adapters
        assert all(b["holdout_loss_after"] <= b["holdout_loss_start"] for b in fit["blockwise"]["blocks"])
        masters = [p for c in calibration.corrections.values() for p in c.parameters()]
        assert masters and all(p.dtype == torch.float32 for p in masters)
        calibration.remove()
        assert all(torch.equal(p, noisy[name]) for name, p in model.named_parameters())
    assert all(torch.equal(p, clean[name]) for name, p in model.named_parameters())


def test_the_blockwise_planner_reads_each_layer_a_bounded_number_of_times(tmp_path):
    """Ranking by whole-model perplexity runs every layer once per on-chip matrix; the block-wise planner runs each
    layer once per matrix of its own, plus twice (its base error and the pass to the next layer)."""
    from romer.calibration.blockwise import block_sensitivity
    from romer.calibration.blocks import decoder_layers, record_layer_outputs
    from romer.calibration.methods.offload import tensor_sensitivity
    from romer.noise import apply_noise_, parse_noise_spec

    folder = write_random_checkpoint(OLMOE, tmp_path / "m", layers=3, dtype="float32", **NARROW)
    model, _ = romer.load_model(str(folder))
    probe = torch.randint(0, 512, (4, 64), generator=torch.Generator().manual_seed(0))
    layers = decoder_layers(model)
    calls = {name: 0 for name, _ in layers}
    for name, layer in layers:
        layer.register_forward_pre_hook(lambda module, args, name=name: calls.__setitem__(name, calls[name] + 1))
    clean = record_layer_outputs(model, lambda: model(input_ids=probe))
    with apply_noise_(model, parse_noise_spec("cim-80c"), seed=0) as chip:
        matrices = [n for n in chip.on_chip_names() if len(chip.shape(n)) == 2]
        per_layer = {name: len([m for m in matrices if m.startswith(name + ".")]) for name, _ in layers}
        calls.update({name: 0 for name in calls})
        ranked = block_sensitivity(model, chip, probe, 4, matrices, clean)
        first = layers[0][0]  # its inputs are captured by one pass that stops as it enters it
        assert calls == {name: per_layer[name] + 2 + (name == first) for name in calls}
        assert {r["tensor"] for r in ranked} == set(matrices)
        assert [r["gain_per_mweight"] for r in ranked] == sorted((r["gain_per_mweight"] for r in ranked), reverse=True)
        calls.update({name: 0 for name in calls})
        tensor_sensitivity(model, chip, probe, 4, max_size=float("inf"), names=matrices)
        assert calls == {name: len(matrices) + 1 for name in calls}


def test_loading_gives_back_the_checkpoint_pages_no_tensor_lies_in(tmp_path):
    import sys

    from romer.resident import release_checkpoint_pages

    folder = write_random_checkpoint(OLMOE, tmp_path / "m", layers=2, dtype="float32", **NARROW)
    model, _ = romer.load_model(str(folder))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    released = release_checkpoint_pages(model)
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # no live tensor was touched
    ids = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(model(input_ids=ids).logits).all()
    if sys.platform.startswith("linux"):
        assert released > 0  # the per-expert tensors' pages: read once to build the fused parameters


def test_the_stage_work_is_counted_from_the_shape_and_rates_fit_back():
    from romer.scale.timing import Shape, Workload, fit_rates, shape_of, stage_seconds, work
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(OLMOE, num_hidden_layers=3, **NARROW)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shape = shape_of(model, 2)
    h, i, e, k = 64, 32, 8, 2
    assert shape.layers == 3 and shape.matrices_per_layer == 5  # q, k, v, o and the router
    assert shape.layer_reads == 4 * h * h + e * h + k * (2 * i * h + h * i)  # a token reads top-k experts only
    assert shape.head_reads == 512 * h
    assert shape.on_chip_parameters == 3 * (4 * h * h + e * h + e * 3 * i * h)
    truth = {"program": 2e-7, "fit": 3e-9, "evaluate": 1e-9}
    records = []
    for layers in (1, 2, 4):
        depth = Shape(**{**shape.__dict__, "layers": layers})
        load = Workload()
        records.append((depth, load, {s: r * work(depth, load)[s] for s, r in truth.items()}))
    fitted = fit_rates(records)
    assert fitted == pytest.approx(truth)
    deeper = Shape(**{**shape.__dict__, "layers": 16})
    assert stage_seconds(deeper, Workload(), fitted)["fit"] == pytest.approx(truth["fit"] * work(deeper, Workload())["fit"])


def test_a_disk_backup_removes_the_copies_dead_processes_left(tmp_path):
    import subprocess
    import sys

    from romer.noise.backup import PREFIX, DiskBackup

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{PREFIX}{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "0.bin").write_bytes(b"x" * 10)
    foreign = tmp_path / "romer-clean-notapid"
    foreign.mkdir()
    backup = DiskBackup(tmp_path)
    mine = [p for p in tmp_path.iterdir() if p.name.startswith(f"{PREFIX}{__import__('os').getpid()}-")]
    assert not stale.exists() and foreign.exists() and len(mine) == 1
    other = DiskBackup(tmp_path)  # a live process's copy (this one's) is never removed
    assert all(p.exists() for p in mine)
    backup.close()
    other.close()
