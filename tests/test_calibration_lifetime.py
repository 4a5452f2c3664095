"""A calibration's life is tied to its chip: restoring the chip removes the calibration first, removing it after
that changes nothing, the clean model computes clean, and the model takes a new calibration. One test per kind of
change a calibration makes: a digital correction, an expert replacement, a digital move, outliers, HPD."""

from __future__ import annotations

import pytest
import torch

from romer import CalibrationConfig, NoiseConfig, apply_noise_, calibrate_
from romer.errors import RomerError
from romer.noise.analog import AnalogWeight
from romer.noise.layout import ChipLayout
from tests.families import build

CIM = NoiseConfig.preset("cim-80c")  # per-forward effects: a re-wrap of the clean weights would show

PATHS = {
    "correction": CalibrationConfig(method="compensate"),
    "replacement": CalibrationConfig(method="er", tau=1.0),
    "digital move": CalibrationConfig(method="hetero"),
    "outliers": CalibrationConfig(method="outliers"),
    "hpd": CalibrationConfig(method="hpd"),
}


def ids(seed: int = 0, tokens: int = 64 * 8) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids(5, 64 * 2).view(-1, 64)).logits


def state(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def changed(calibration) -> bool:
    return bool(calibration.corrections or calibration.replacements or calibration.digital or calibration.outliers
                or calibration.decomposed)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_restore_removes_the_calibration_and_a_later_remove_leaves_the_clean_model_clean(path):
    model = build("olmoe")
    clean, weights = logits(model), state(model)
    chip = apply_noise_(model, CIM, seed=0)
    calibration = calibrate_(model, PATHS[path], ids())
    assert changed(calibration), path
    chip.restore()
    assert calibration.removed
    calibration.remove()  # after a restore: nothing to do, nothing re-wrapped
    assert not any(isinstance(p, AnalogWeight) for p in model.parameters())
    assert torch.equal(logits(model), clean)
    assert all(torch.equal(value, weights[name]) for name, value in state(model).items())
    with apply_noise_(model, CIM, seed=1):  # the model takes a new chip and a new calibration
        calibrate_(model, PATHS[path], ids()).remove()
    assert torch.equal(logits(model), clean)


def test_a_restored_chip_refuses_changes_and_calibration_in_one_line():
    model = build("olmoe")
    chip = apply_noise_(model, CIM, seed=0)
    chip.restore()
    name = chip.names()[0]
    for change in (lambda: chip.make_digital(name), lambda: chip.attach_correction(name, None),
                   lambda: chip.split_outliers(name, 0.01), lambda: chip.suspended().__enter__()):
        with pytest.raises(RomerError, match="this chip was restored"):
            change()
    with pytest.raises(RomerError, match="was restored") as error:
        calibrate_(model, CalibrationConfig(method="rc"), ids(), chip=chip)
    assert "\n" not in str(error.value)
    assert chip.layout == ChipLayout()


def test_the_chip_layout_is_one_value_saved_with_the_calibration_and_used_by_other_instances():
    model = build("qwen2_moe")
    with apply_noise_(model, CIM, seed=2) as chip:
        calibration = calibrate_(model, CalibrationConfig(method="hetero"), ids())
        layout = chip.layout
        assert layout == calibration.layout() and not layout.empty
        assert ChipLayout.from_dict(calibration.as_dict()) == layout  # the record holds it whole
        with chip.other_instance(7) as other:
            assert other.layout == layout  # the other chip has the same tensors and slots in digital units
            assert all(other.is_digital(*key) for key in [(n, None) for n in layout.digital] + list(layout.digital_slots))
        assert chip.layout == layout
        calibration.remove()
        assert chip.layout == ChipLayout()
