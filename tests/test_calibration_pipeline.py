"""The calibration pipeline: methods as lists of registered steps, one visit to the clean twin per chip,
no silently dropped setting, honest names, and a new method registered from outside the package."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import romer.calibration.methods.retune as retune_module
from romer import CalibrationConfig, NoiseConfig, RomerConfig, apply_noise_, calibrate_
from romer.calibration import Method, Step, get_method, method_names, register_method, register_step
from romer.errors import RomerError
from romer.noise.chip import ChipHandle
from tests.families import build

NOISE = NoiseConfig.preset("gaussian", sigma_dev=0.08)
FAST_RETUNE = dict(calib_tokens=64 * 12, window=64, retune_steps=4, retune_eval_every=2, batch_size=4)


def calib_ids(seed: int = 1, tokens: int = 64 * 12) -> torch.Tensor:
    return torch.randint(1, 128, (tokens,), generator=torch.Generator().manual_seed(seed))


def counted_calls(monkeypatch, owner, attribute: str) -> list:
    """Every call of `owner.attribute` from now on appends one entry to the returned list."""
    calls, original = [], getattr(owner, attribute)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, counting)
    return calls


@pytest.fixture
def clean_twin_visits(monkeypatch):
    return counted_calls(monkeypatch, ChipHandle, "suspended")


@pytest.fixture
def retune_fits(monkeypatch):
    return counted_calls(monkeypatch, retune_module, "retune")


def test_tuned_with_retune_fits_once_and_visits_the_clean_twin_once(clean_twin_visits, retune_fits):
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=1):
        calibration = calibrate_(model, CalibrationConfig(method="tuned", retune=True, digital_budget=0.0,
                                                          **FAST_RETUNE), calib_ids())
        assert len(calibration.report["tuning"]) == 12  # twelve trials ...
        assert len(retune_fits) == 1                      # ... and one fit, after them
        assert len(clean_twin_visits) == 1                # renorm's statistics, load bias and the teacher together
        calibration.remove()


@pytest.mark.parametrize("method, fields", [
    ("rc", {}), ("romer", {"tau": 1.0}), ("tuned", {"digital_budget": 0.05, "calib_tokens": 64 * 12}),
    ("retune", FAST_RETUNE)])
def test_one_visit_to_the_clean_twin_per_calibration(clean_twin_visits, method, fields):
    model = build("qwen2_moe")
    with apply_noise_(model, NOISE, seed=2):
        calibrate_(model, CalibrationConfig(method=method, **fields), calib_ids()).remove()
    assert len(clean_twin_visits) == 1


def test_methods_that_need_no_clean_twin_never_visit_it(clean_twin_visits):
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=2):
        calibrate_(model, CalibrationConfig(method="rc", router="equalize"), calib_ids()).remove()
        calibrate_(model, CalibrationConfig(method="er", tau=1.0), calib_ids()).remove()
    assert clean_twin_visits == []


# a field each method does not read, and a method that does
IGNORED = {"none": ("tau", "er"), "er": ("router", "rc"), "rc": ("tau", "er"), "romer": ("digital_budget", "tuned"),
           "tuned": ("retune_rank", None), "retune": ("load_bias", "tuned"), "compensate": ("tau", "er"),
           "compensate-global": ("router", "rc"), "hetero": ("tau", "er"), "hetero-measured": ("retune_rank", "retune"),
           "retune-agnostic": ("tau", "er"), "hpd": ("tau", "er"),
           "attention-retune": ("tau", "er"), "outliers": ("retune_rank", "retune"),
           "outlier-retune": ("tau", "er"), "retune-from-agnostic": ("tau", "er"),
           "ahwa-lora": ("retune_rank", "retune"), "ahwa-lora-retune": ("retune_rank", "retune")}


@pytest.mark.parametrize("method", sorted(IGNORED))
def test_a_set_field_the_method_ignores_is_refused_in_one_line(method):
    assert set(IGNORED) <= set(method_names())
    option, reader = IGNORED[method]
    if reader is None:  # tuned reads every option (retune's through retune=True): nothing to refuse
        assert option in get_method(method).fields()
        return
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        value = CalibrationConfig.model_fields[option].default
        value = {bool: True, float: 0.5, str: "equalize"}.get(type(value), value)
        with pytest.raises(RomerError) as error:
            calibrate_(model, CalibrationConfig(method=method, **{option: value}), calib_ids())
    message = str(error.value)
    assert "\n" not in message and f"'{option}'" in message and f"'{method}'" in message and reader in message


def test_defaults_a_method_brings_are_in_its_record():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        calibration = calibrate_(model, CalibrationConfig(method="tuned", digital_budget=0.0), calib_ids())
        assert calibration.report["method_defaults"] == {"tune": True}
        json.dumps(calibration.as_dict())
        calibration.remove()


def test_best_is_the_former_name_of_tuned_and_warns(monkeypatch):
    import romer.calibration.registry as methods

    monkeypatch.setattr(methods, "_warned", set())
    with pytest.warns(FutureWarning, match="'best' is now called 'tuned'"):
        assert CalibrationConfig(method="best").method == "tuned"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert RomerConfig(method="best").method == "tuned"  # once only
    assert RomerConfig is CalibrationConfig and "best" not in method_names()


def test_a_new_method_registers_from_outside_the_package_and_runs():
    class Halve(Step):
        """Every router logit halved (a step of this test only)."""

        name = "test-halve"
        options = ("lam",)

        def run(self, context):
            for layer in range(len(context.calibration.layers)):
                context.calibration.transform(layer).bias = torch.zeros(context.calibration.layers[layer].num_experts)

    register_step(Halve())
    register_method(Method("test-halved", "router bias zero then ROMER's router step", steps=("test-halve", "router"),
                           defaults={"router": "equalize"}))
    try:
        model = build("olmoe")
        with apply_noise_(model, NOISE, seed=0):
            calibration = calibrate_(model, CalibrationConfig(method="test-halved", lam=2.0), calib_ids())
            assert all(t.bias is not None and t.noisy_median is not None for t in calibration.transforms.values())
            assert calibration.report["method_defaults"] == {"router": "equalize"}
            calibration.remove()
            with pytest.raises(RomerError, match="'tau' is not used by method 'test-halved'"):
                calibrate_(model, CalibrationConfig(method="test-halved", tau=0.3), calib_ids())
    finally:
        from romer.calibration.registry import unregister_method, unregister_step

        unregister_method("test-halved")
        unregister_step("test-halve")


def test_each_tuning_trial_runs_with_its_own_change_only(monkeypatch):
    """A trial's settings are the method's settings, the choices of earlier stages and its own change: nothing of the
    trial before it (the first trial switches replacement off; the four after it must replace)."""
    from romer.calibration.methods.romer import ExpertReplacement

    seen = []
    original = ExpertReplacement.run

    def spying(self, context):
        seen.append((context.config.pairing, context.config.tau))
        return original(self, context)

    monkeypatch.setattr(ExpertReplacement, "run", spying)
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        calibration = calibrate_(model, CalibrationConfig(method="tuned", digital_budget=0.0), calib_ids())
        calibration.remove()
    assert seen[:4] == [("replica", 0.5), ("replica", 0.25), ("weights", 0.5), ("clone", 0.5)]


def test_the_tuner_keeps_every_field_the_user_set():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        calibration = calibrate_(model, CalibrationConfig(method="tuned", digital_budget=0.0, router="clamp",
                                                          tau=0.4), calib_ids())
        assert calibration.config.router == "clamp" and calibration.config.tau == 0.4
        tried = [trial["change"] for trial in calibration.report["tuning"]]
        assert not any("router" in change or "tau" in change for change in tried)
        assert {"lam": 3.0} in tried  # what the user left open is still chosen
        assert calibration.report["tuning_kept"] == ["router", "tau"]
        calibration.remove()


@pytest.mark.parametrize("method, fields, option", [
    ("tuned", {"retune_rank": 4}, "retune_rank"),            # retune's fit runs only with retune=True
    ("romer", {"router": "none", "lam": 2.0}, "lam"),        # no router step: its fences are never read
    ("romer", {"lam": 2.0}, "lam"),                          # renorm maps median and IQR: no fences
    ("er", {"max_replaced": 0.0, "tau": 0.3}, "tau")])       # nothing replaced: the threshold is never read
def test_a_setting_the_resolved_steps_do_not_read_is_refused_in_one_line(method, fields, option):
    from romer.calibration import resolve

    with pytest.raises(RomerError) as error:
        resolve(CalibrationConfig(method=method, **fields))
    assert "\n" not in str(error.value) and f"'{option}'" in str(error.value)
    resolve(CalibrationConfig(method="tuned", retune=True, retune_rank=4, **FAST_RETUNE))  # read: accepted
    resolve(CalibrationConfig(method="tuned", lam=2.0))  # the tuner may choose clamp: read


def test_an_explicit_holdout_is_kept():
    model = build("olmoe")
    with apply_noise_(model, NOISE, seed=0):
        default = calibrate_(model, CalibrationConfig(method="rc", calib_tokens=64 * 8, window=64), calib_ids())
        assert default.report["tokens"]["holdout"] == 0  # rc scores nothing held out: every token fits
        default.remove()
        explicit = calibrate_(model, CalibrationConfig(method="rc", calib_tokens=64 * 8, window=64, holdout=0.25),
                              calib_ids())
        assert explicit.report["tokens"]["holdout"] == 64 * 2 and explicit.report["tokens"]["fit"] == 64 * 6
        explicit.remove()
