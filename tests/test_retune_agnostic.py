"""retune-agnostic: one set of digital corrections fitted over other chip draws, reused on every chip; the chip it
calibrates is never seen by the fit, and the fit leaves that chip bit for bit as it was."""

from __future__ import annotations

import pytest
import torch

import romer
from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.calibration.persist import save_calibrated
from romer.calibration.methods.retune_agnostic import AGNOSTIC_SEED_BASE
from romer.errors import RomerError
from tests.families import build

NOISE = NoiseConfig.preset("cim-80c", adc_offset_sigma=2.0)
FAST = dict(method="retune-agnostic", calib_tokens=64 * 12, window=64, retune_steps=6, retune_eval_every=3,
            retune_lr=5e-3, retune_budget=0.05, retune_over_chips=2)


def ids(seed: int = 1, tokens: int = 64 * 12) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def outputs(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(7, 64 * 4).view(-1, 64)).logits


def test_one_fit_over_other_chips_serves_every_chip_and_undoes_exactly():
    model = build("olmoe")
    visited = []
    fitted = {}
    for seed in (0, 1):
        with apply_noise_(model, NOISE, seed=seed) as chip:
            noisy = outputs(model)
            calibration = calibrate_(model, CalibrationConfig(**FAST), ids())
            report = calibration.report["retune-agnostic"]
            visited.append(report["reused"])
            assert report["fit_seeds"] == [AGNOSTIC_SEED_BASE, AGNOSTIC_SEED_BASE + 1]
            assert report["holdout_kl_by_cycle"][report["best_cycle"] - 1] == min(report["holdout_kl_by_cycle"])
            values = {n: c.gain.detach().clone() for n, c in calibration.corrections.items() if c.gain is not None}
            assert values and any(v.abs().sum() > 0 for v in values.values())  # the fit moved the corrections
            if fitted:
                assert all(torch.equal(values[n], fitted[n]) for n in fitted)  # the same corrections on every chip
            fitted = values
            stored = sum(c.stored_parameters for c in calibration.corrections.values())
            stored += sum(p.numel() for p, _ in calibration.norms.values())  # the norm gains it re-sets
            stored += sum(t.bias.numel() for t in calibration.transforms.values() if t.bias is not None)
            assert calibration.digital_weights() == stored
            assert calibration.digital_share() == pytest.approx(stored / chip.total_parameters)
            assert stored <= FAST["retune_budget"] * chip.total_parameters
            calibration.remove()
            assert torch.equal(outputs(model), noisy)  # the fit over other chips left this one as it was
    assert visited == [False, True]


def test_a_fit_chip_is_refused_as_the_chip_to_calibrate():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=AGNOSTIC_SEED_BASE + 1):
        with pytest.raises(RomerError, match="fit chips"):
            calibrate_(model, CalibrationConfig(**FAST), ids())


def test_retune_agnostic_saves_and_reloads_bit_for_bit(tmp_path, tiny_moe_dir):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    tokens = (torch.arange(64 * 12).remainder(299) + 1)
    with apply_noise_(model, NOISE, seed=3):
        calibration = calibrate_(model, CalibrationConfig(**FAST), tokens)
        with torch.no_grad():
            expected = model(input_ids=tokens[:256].view(-1, 64)).logits
        save_calibrated(model, tokenizer, calibration, tmp_path / "agnostic")
        calibration.remove()
    loaded, _ = romer.load_model(str(tmp_path / "agnostic"))
    carried = romer.load_calibration(loaded, tmp_path / "agnostic")
    with apply_noise_(loaded, NOISE, seed=3, calibration=carried), torch.no_grad():
        assert torch.equal(loaded(input_ids=tokens[:256].view(-1, 64)).logits, expected)


def test_the_per_chip_fit_started_from_the_agnostic_one_goes_on_from_its_values_and_undoes_exactly(monkeypatch):
    """retune-from-agnostic: retune's fit on this chip starts where the chip-agnostic fit left the corrections (the
    same plan when adapters are off: columns everywhere, chosen by the budget alone), router biases and norm gains."""
    import romer.calibration.methods.retune as retune_module

    model = build("olmoe")
    options = FAST | dict(retune_rank=0)
    at_start = {}
    fit = retune_module.fit_end_to_end

    def recording_fit(*args, **kwargs):
        at_start.update({n: chip.correction(n).gain.detach().clone() for n in chip.corrected_names()})
        return fit(*args, **kwargs)

    monkeypatch.setattr(retune_module, "fit_end_to_end", recording_fit)
    with apply_noise_(model, NOISE, seed=0) as chip:
        noisy = outputs(model)
        agnostic = calibrate_(model, CalibrationConfig(**options), ids())
        agnostic_kl = agnostic.report["retune"]["holdout_kl_before"] if "retune" in agnostic.report else None
        installed = {n: c.gain.detach().clone() for n, c in agnostic.corrections.items()}
        agnostic.remove()
        assert agnostic_kl is None and torch.equal(outputs(model), noisy)
        calibration = calibrate_(model, CalibrationConfig(**(options | dict(method="retune-from-agnostic"))), ids())
        report = calibration.report["retune"]
        assert report["least_squares_start"] == 0
        assert sorted(report["continued_from_installed"]) == sorted(installed)
        assert all(torch.equal(at_start[n], installed[n]) for n in installed)  # the fit starts at the agnostic values
        assert calibration.report["retune-agnostic"]["reused"]  # the fit over chips was not run again
        fitted = {n: c.gain.detach() for n, c in calibration.corrections.items()}
        assert any(not torch.equal(fitted[n], installed[n]) for n in installed)  # and this chip's fit moved them
        calibration.remove()
        assert torch.equal(outputs(model), noisy)
        assert not calibration.norms
