"""Device effects are registered: docs/examples/stuck_devices.py adds one in one file, its faults come at their
rate (a binomial count), it draws from a stream of its own (every other device's draws unchanged), its options are
checked in one line, and its name is taken once."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
import torch

from romer.errors import RomerError
from romer.noise import EffectInputs, NoiseConfig, register_device_effect, unregister_device_effect
from romer.noise.effects import device_effect_names
from romer.noise.physics import DevicePhysics
from romer.noise.streams import stream
from tests.test_registry import ROOT

EXAMPLE = ROOT / "docs" / "examples" / "stuck_devices.py"


@pytest.fixture
def stuck():
    spec = importlib.util.spec_from_file_location("stuck_devices", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an installed plugin is
    spec.loader.exec_module(module)
    yield module
    unregister_device_effect(module.NAME)
    sys.modules.pop(spec.name)


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_the_built_in_chain_is_in_registry_order():
    assert device_effect_names() == ["programming", "temperature", "drift", "read_1f", "retention"]


def test_a_new_effect_in_one_file_takes_its_place_and_faults_at_its_rate(stuck):
    assert device_effect_names()[:3] == ["programming", "stuck-off", "temperature"]
    physics = DevicePhysics.from_config(NoiseConfig(effects={"stuck-off": {"fraction": 0.05}}))
    effect = physics.effect("stuck-off")
    asked = []

    def streams(name: str) -> torch.Generator:
        asked.append(name)
        return torch.Generator().manual_seed(3)

    g = torch.full((2, 128, 128), 10.0)
    stuck_g = effect.act(g, EffectInputs(target=g, stream=streams))
    assert asked == ["stuck-off"]  # a stream of its own
    zeros = int((stuck_g == 0).sum())
    assert within(zeros, g.numel(), 0.05)
    assert torch.equal(stuck_g[stuck_g != 0], g[stuck_g != 0])  # the others untouched
    assert torch.equal(effect.act(g, EffectInputs(target=g, stream=streams)), stuck_g)  # same seed, same bits


def test_a_new_effect_leaves_every_other_draw_as_it_was(stuck):
    weight = torch.randn(96, 512, generator=torch.Generator().manual_seed(0))
    fields = dict(sigma_dev=0.05, drift_compensation=False)
    before, _ = DevicePhysics.from_config(NoiseConfig(**fields)).program(weight, lambda e: stream(0, "w", e))
    after, _ = DevicePhysics.from_config(NoiseConfig(**fields, effects={"stuck-off": {"fraction": 0.05}})).program(
        weight, lambda e: stream(0, "w", e))
    changed = before != after
    # a weight changes where its driven device sticks (p), or its idle device does while programming noise left it
    # above zero (half of the idle devices: target 0, noise clamped at 0)
    p = 0.05
    assert within(int(changed.sum()), weight.numel(), p + p / 2 - p * p / 2)
    assert not changed.all()  # every weight whose devices did not stick is bit for bit the chip without the effect


def test_an_effects_options_are_checked_in_one_line(stuck):
    with pytest.raises(RomerError, match=r"^noise field 'effects': stuck-off option 'fraction': .*less than 1"):
        NoiseConfig(effects={"stuck-off": {"fraction": 2.0}})
    with pytest.raises(RomerError, match=r"unknown stuck-off option 'rate'; the options of 'stuck-off' are fraction"):
        NoiseConfig(effects={"stuck-off": {"rate": 0.1}})
    with pytest.raises(RomerError, match="no device effect 'stuck-on' is registered"):
        NoiseConfig(effects={"stuck-on": {}})
    with pytest.raises(RomerError, match="'drift' takes no options here"):
        NoiseConfig(effects={"drift": {}})
    assert NoiseConfig(effects={"stuck-off": {}}).effects == {"stuck-off": {"fraction": 0.0}}


def test_an_effect_name_is_registered_once(stuck):
    with pytest.raises(RomerError, match=r"device effect 'stuck-off' is already registered by stuck_devices; "
                                         r"tests.test_noise_effects registers it again"):
        register_device_effect("stuck-off", stuck.StuckOff.from_config, order=150, stage="programming")
