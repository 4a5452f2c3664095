"""Labelled method variants: one method several times in one `romer run`, each under its own settings."""

from __future__ import annotations

import json

import pytest

from romer.calibration import resolve
from romer.campaign import run_campaign, run_spec
from romer.campaign.trials import calibration_for
from romer.campaign.variants import Variant, parse_variant
from romer.errors import RomerError


def test_an_entry_parses_to_its_label_method_and_typed_settings():
    assert parse_variant("romer") == Variant("romer", "romer", {})
    variant = parse_variant("or2=outlier-retune@retune_budget=0.01@outlier_attention=2")
    assert variant == Variant("or2", "outlier-retune", {"retune_budget": 0.01, "outlier_attention": 2})
    assert parse_variant(variant.entry()) == variant
    mapping = {"label": "x", "method": "rc", "set": {"router": "clamp"}}
    assert parse_variant(mapping) == Variant("x", "rc", {"router": "clamp"})


@pytest.mark.parametrize("entry, words", [
    ("romer@tau=1", "no label"), ("a=romer@tau", "cannot read 'tau'"), ("=romer@tau=1", "needs both"),
    ({"method": "rc", "oops": 1}, "label, method and set"), ({"label": "a", "method": "rc", "set": 3}, "mapping")])
def test_a_malformed_entry_is_one_line_naming_the_form(entry, words):
    with pytest.raises(RomerError, match=words):
        parse_variant(entry)


def test_the_spec_keeps_labels_and_what_each_resolves_to():
    spec = run_spec(methods=["none", "outlier-retune", "or2=outlier-retune@retune_budget=0.01"],
                    calibration={"retune_steps": 7})
    assert spec.methods == ["none", "outlier-retune", "or2"]
    assert spec.method_of("or2") == "outlier-retune" and spec.settings_of("or2") == {"retune_budget": 0.01}
    base, variant = resolve(calibration_for(spec, "outlier-retune"))[0], resolve(calibration_for(spec, "or2"))[0]
    assert variant.method == "outlier-retune" and variant.retune_budget == 0.01 and base.retune_budget == 0.005
    assert variant.retune_steps == base.retune_steps == 7  # the campaign's options reach every variant
    plain = run_spec(methods=["none", "romer"])
    assert plain.variants == {} and "variants" not in json.dumps(plain.fingerprint())


@pytest.mark.parametrize("methods, words", [
    (["romer=rc@router=clamp"], "name of a method"), (["x=rc", "x=er"], "given twice"),
    (["x=nothing@a=1"], "unknown method 'nothing'")])
def test_a_bad_variant_is_refused_in_one_line(methods, words):
    with pytest.raises(RomerError, match=words):
        run_spec(methods=methods)


def test_a_setting_the_method_does_not_read_is_refused():
    spec = run_spec(methods=["none", "x=romer@retune_budget=0.1"])
    with pytest.raises(RomerError, match="'retune_budget' is not used by method romer \\(variant x\\)"):
        calibration_for(spec, "x")


def test_two_variants_of_one_method_run_side_by_side_keyed_by_label(tiny_moe_dir, texts, tmp_path):
    evaluation, calibration = texts
    spec = run_spec(model=str(tiny_moe_dir), data=str(evaluation), calib_data=str(calibration),
                    noise=["gaussian:sigma_dev=0.1"], seeds=[0], window=64, max_tokens=64 * 4, routing_tokens=64 * 2,
                    methods=["none", "rc", "clamped=rc@router=clamp"], calibration={"calib_tokens": 64 * 4},
                    clean_cost=False)
    summary = run_campaign(spec, tmp_path / "variants", progress=False)
    methods = summary["methods"]
    assert set(methods) == {"none", "rc", "clamped"}
    assert methods["clamped"]["variant"] == {"method": "rc", "settings": {"router": "clamp"}}
    assert methods["rc"]["ppl_mean"] != methods["clamped"]["ppl_mean"]  # the setting reached the calibration
    records = [json.loads(line) for line in (tmp_path / "variants" / "results.jsonl").read_text().splitlines()]
    clamped = next(r for r in records if r.get("method") == "clamped")
    assert clamped["variant"]["method"] == "rc" and clamped["calibration"]["config"]["router"] == "clamp"
    again = run_campaign(spec, tmp_path / "variants", progress=False)  # resumes: nothing re-run, same figures
    assert again["methods"]["clamped"]["ppl_mean"] == methods["clamped"]["ppl_mean"]
