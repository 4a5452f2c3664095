"""`romer age` and the drift monitor: a method calibrated once and read unchanged at later moments, beside a
recalibration; resumable; the monitor's score from live traffic alone."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

import romer
from romer import Condition, NoiseConfig, apply_noise_
from romer.calibration import refresh_teacher, refreshable
from romer.campaign.age import run_age
from romer.campaign.age_spec import age_spec
from romer.diagnosis.monitor import ALARM_FRACTION, SIGMAS, Snapshot, drift_score, reference, snapshot
from romer.errors import RomerError
from romer.evaluation import perplexity, tokenize_stream


def spec_for(model_dir, texts, **extra):
    evaluation, calibration = texts
    fields = dict(model=str(model_dir), data=str(evaluation), calib_data=str(calibration), noise="pcm-cim",
                  methods=["none", "compensate"], seeds=[0], times=["1h", "1y"], temperatures=[25, 80],
                  max_tokens=512, monitor_tokens=192, monitor_floor_windows=2, window=64)
    return age_spec(**(fields | extra))


def test_age_reads_one_calibrated_chip_at_every_condition_and_resumes(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts)
    assert spec.conditions() == ["1h@25C", "1y@25C", "1h@80C", "1y@80C"]
    seen = []
    results = run_age(spec, tmp_path / "age", progress=False, on_record=seen.append)
    kinds = [r["kind"] for r in seen]
    # the clean model; 2 methods × 4 conditions aged; compensate afresh at the 3 other conditions
    assert kinds.count("clean") == 1 and kinds.count("aged") == 8 and kinds.count("recalibrated") == 3
    # compensate re-reads its probe wherever the chip is read, as aihwkit and a deployed chip do (issue 43)
    assert all(r.get("reread") for r in seen if r["kind"] == "aged" and r["method"] == "compensate")
    assert not any(r.get("reread") for r in seen if r["kind"] == "aged" and r["method"] == "none")
    for name in ("results.json", "report.md", "aging.png"):
        assert (tmp_path / "age" / name).is_file()

    # `none` aged at a condition is the chip programmed at that condition, its read noise anchored at the calibration
    # (1 h): the same bits as apply_noise_(at=...) with that anchor
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, texts[0].read_text())[:512]
    for condition in ("1h@25C", "1y@80C"):
        with apply_noise_(model, NoiseConfig.preset("pcm-cim", read_anchor_s=3600.0), seed=0,
                          at=Condition.parse(condition)):
            expected = perplexity(model, ids, 64).ppl
        found = next(r for r in seen if r["kind"] == "aged" and r["method"] == "none" and r["condition"] == condition)
        assert found["ppl"] == expected

    # the same chip instance read later and hotter computes something else (this random model's perplexity need
    # not rise; romer-tiny's does: docs/results/aging.md)
    none = {r["condition"]: r["ppl"] for r in seen if r["kind"] == "aged" and r["method"] == "none"}
    assert len(set(none.values())) == 4
    assert set(results["monitor"]) == {"none", "compensate"}

    again = []
    rerun = run_age(spec, tmp_path / "age", progress=False, on_record=again.append)
    assert again == [] and rerun["rows"] == results["rows"]  # a rerun measures nothing twice
    lines = (tmp_path / "age" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12 and len({json.dumps(json.loads(l), sort_keys=True) for l in lines}) == 12

    with pytest.raises(RomerError, match="different configuration"):
        run_age(spec_for(tiny_moe_dir, texts, times=["1h", "1d"]), tmp_path / "age", progress=False)


def test_bad_conditions_are_one_line_errors(tiny_moe_dir, texts):
    with pytest.raises(RomerError, match="calibrate_at"):
        spec_for(tiny_moe_dir, texts, calibrate_at="1h")
    with pytest.raises(RomerError, match="cannot read the condition"):
        spec_for(tiny_moe_dir, texts, times=["soon"])


def test_the_drift_score_is_zero_on_the_same_probe_grows_as_the_chip_ages_and_alarms_past_half_its_damage(
        tiny_moe_dir, sample_txt):
    model, tokenizer = romer.load_model(str(tiny_moe_dir))
    ids = tokenize_stream(tokenizer, sample_txt.read_text())[:64 * 16]
    windows = [ids[64 * 4 * i:64 * 4 * (i + 1)] for i in range(4)]
    probe = windows[0]
    clean = snapshot(model, probe, 64)
    with apply_noise_(model, NoiseConfig.preset("pcm-cim"), seed=0) as chip:
        stored = reference(model, probe, 64, clean=clean)
        assert (stored.floor, stored.spread) == (0.0, 0.0)  # the chip reads the same probe bit for bit
        assert stored.damage == drift_score(stored, clean)["score"] > 0
        assert stored.threshold() == ALARM_FRACTION * stored.damage
        unchanged = drift_score(stored, snapshot(model, probe, 64))
        assert unchanged["score"] == 0.0 and not unchanged["recalibrate"]
        scores = []
        for moment in ("1d", "1y", "1y@80C"):
            chip.move_to(Condition.parse(moment))
            scores.append(drift_score(stored, snapshot(model, probe, 64)))
        assert scores[0]["score"] < scores[1]["score"] < scores[2]["score"]
        assert all(s["recalibrate"] == (s["score"] > stored.threshold()) for s in scores)
        chip.move_to(Condition.parse("1h@25C"))
        live = reference(model, probe, 64, others=windows[1:])  # live traffic: the floor from other windows
        floor = [drift_score(live, snapshot(model, w, 64))["score"] for w in windows[1:]]
        assert live.floor == pytest.approx(statistics.fmean(floor)) and live.floor > 0
        assert live.spread == pytest.approx(statistics.stdev(floor)) and live.spread > 0
        assert live.damage is None and live.threshold() == pytest.approx(live.floor + SIGMAS * live.spread)
        alarm = drift_score(live, snapshot(model, windows[1], 64))
        assert alarm["recalibrate"] == (alarm["score"] > live.threshold())
        assert alarm["sigmas"] == pytest.approx((alarm["score"] - live.floor) / live.spread)
    restored = Snapshot.from_dict(json.loads(json.dumps(stored.as_dict())))
    assert all(torch.allclose(a, b.to(a.dtype)) for a, b in zip(stored.load, restored.load))
    assert (restored.floor, restored.spread, restored.damage) == (stored.floor, stored.spread, stored.damage)
    with pytest.raises(ValueError, match="further read"):
        reference(model, probe, 64, others=[])
    one = reference(model, probe, 64, others=windows[1:2])
    assert one.spread is None and one.threshold() is None
    assert "recalibrate" not in drift_score(one, snapshot(model, windows[2], 64))


FAST_RETUNE = dict(calib_tokens=64 * 12, window=64, retune_steps=6, retune_eval_every=2, retune_budget=0.05)


def test_a_refresh_refits_what_the_calibration_carries_on_the_aged_chip_adds_nothing_and_undoes():
    from tests.families import build

    model = build("olmoe")
    tokens = torch.arange(64 * 12).remainder(97) + 1
    probe = (torch.arange(64 * 4).remainder(89) + 1).view(-1, 64)

    def logits():
        with torch.no_grad():
            return model(input_ids=probe).logits

    with apply_noise_(model, NoiseConfig.preset("pcm-cim"), seed=1, at=Condition.parse("1h@25C")) as chip:
        calibration = romer.calibrate_(model, romer.CalibrationConfig(method="retune", **FAST_RETUNE), tokens)
        share = calibration.digital_weights()
        chip.move_to(Condition.parse("1y@80C"))
        aged = logits()
        record = romer.refresh_(model, calibration, tokens, steps=4)
        assert record["steps"] == 4 and record["parameters"] == sum(p.numel() for p in calibration.fitted_parameters())
        assert record["holdout_kl_after"] <= record["holdout_kl_start"]  # the best held-out step, never worse
        assert calibration.digital_weights() == share
        assert (record["best_step"] == 0) == torch.equal(logits(), aged)
        calibration.rollback(record["mark"])
        assert torch.equal(logits(), aged)  # undone: the calibration as it was fitted at 1 h, 25 °C
        calibration.remove()
        statistics_only = romer.calibrate_(model, romer.CalibrationConfig(method="romer", tau=1.0), tokens)
        with pytest.raises(RomerError, match="no digital numbers fitted"):
            romer.refresh_(model, statistics_only, tokens)
        statistics_only.remove()
        data_free = romer.calibrate_(model, romer.CalibrationConfig(method="compensate"), tokens)
        assert data_free.fitted_parameters() and not refreshable(data_free)  # gains read, not fitted
        with pytest.raises(RomerError, match="calibrate it again"):
            romer.refresh_(model, data_free, tokens)
        data_free.remove()


def test_a_kept_teacher_refreshes_bit_for_bit_as_a_visit_to_the_clean_twin_at_any_batch():
    from tests.families import build

    model = build("olmoe")
    tokens = torch.arange(64 * 12).remainder(97) + 1
    with apply_noise_(model, NoiseConfig.preset("pcm-cim"), seed=1, at=Condition.parse("1h@25C")) as chip:
        calibration = romer.calibrate_(model, romer.CalibrationConfig(method="retune", **FAST_RETUNE), tokens)
        kept = refresh_teacher(model, calibration, tokens, batch_size=2)  # at calibration, before the chip moves
        chip.move_to(Condition.parse("1y@80C"))
        values = {}
        for teacher in (None, kept):
            record = romer.refresh_(model, calibration, tokens, steps=3, batch_size=2, teacher=teacher)
            assert record["batch_size"] == 2 and record["teacher_kept"] == (teacher is not None)
            assert (record["teacher_seconds"] == 0) == (teacher is not None)
            values[teacher is None] = [p.detach().clone() for p in calibration.fitted_parameters()]
            calibration.rollback(record["mark"])
        assert all(torch.equal(a, b) for a, b in zip(values[True], values[False]))
        with pytest.raises(RomerError, match="batches of 2 sequences"):
            romer.refresh_(model, calibration, tokens, steps=1, batch_size=4, teacher=kept)
        with pytest.raises(RomerError, match="at least one sequence"):
            romer.refresh_(model, calibration, tokens, steps=1, batch_size=0)
        calibration.remove()


def test_the_refresh_teacher_is_the_clean_model_not_the_clean_weights_with_the_calibration_left_on():
    from romer.calibration.teacher import clean_teacher
    from romer.calibration.tokens import CalibrationTokens
    from tests.families import build

    model = build("olmoe")
    tokens = torch.arange(64 * 12).remainder(97) + 1
    config = romer.CalibrationConfig(method="retune", **FAST_RETUNE)
    expected = clean_teacher(model, CalibrationTokens.split(tokens, 64, config.calib_tokens, 0.25), 2, hidden=True)
    with apply_noise_(model, NoiseConfig.preset("pcm-cim"), seed=1):
        calibration = romer.calibrate_(model, config, tokens)
        assert calibration.norms and any(t.bias is not None for t in calibration.transforms.values())
        kept = refresh_teacher(model, calibration, tokens, batch_size=2)
        for made, wanted in zip(kept.fit + kept.holdout, expected.fit + expected.holdout):
            assert torch.equal(made.probs, wanted.probs)
            assert all(torch.equal(a, b) for a, b in zip(made.hidden, wanted.hidden))
        calibration.remove()


def test_age_refreshes_each_fitted_calibration_at_every_later_condition_and_resumes(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, methods=["none", "retune", "romer"], reference=False, refresh_steps=2,
                    refresh_batch_size=2, calibration=FAST_RETUNE, times=["1h", "1y"], temperatures=[80])
    seen = []
    results = run_age(spec, tmp_path / "age", progress=False, on_record=seen.append)
    refreshed = [r for r in seen if r["kind"] == "refreshed"]
    assert spec.conditions() == ["1h@25C", "1h@80C", "1y@80C"]  # refreshed at each but the calibration's own
    assert {(r["method"], r["condition"]) for r in refreshed} == {(m, c) for m in ("retune", "romer")
                                                                  for c in ("1h@80C", "1y@80C")}
    fitted = next(r for r in refreshed if r["method"] == "retune")
    assert fitted["refresh"]["steps"] == 2 and 0 < fitted["refresh_share_of_fit"]
    assert fitted["refresh"]["teacher_kept"] and fitted["refresh"]["batch_size"] == 2
    assert fitted["refresh"]["teacher_seconds"] == 0 < fitted["refresh"]["kept_teacher_seconds"]
    assert "skipped" in next(r for r in refreshed if r["method"] == "romer")  # statistics, no fitted numbers
    row = next(r for r in results["rows"] if r["method"] == "retune" and r["condition"] == "1y@80C")
    assert row["refreshed"]["seeds"] == 1 and "cost_percent_of_fit" in row["refreshed"]
    assert "refreshed (2 steps" in (tmp_path / "age" / "report.md").read_text()
    again = []
    run_age(spec, tmp_path / "age", progress=False, on_record=again.append)
    assert again == []


def test_the_monitor_is_judged_by_outcome_and_against_a_clock_and_a_thermometer(tiny_moe_dir, texts):
    """Issue 43: a false alarm is an alarm where recalibrating would gain less than the tolerance; ρ is reported
    within each temperature beside log t alone and within each time beside the temperature alone."""
    from romer.report.age_summary import _monitor_outcomes

    spec = spec_for(tiny_moe_dir, texts, times=["1h", "1d", "1y"], temperatures=[25, 80], seeds=[0, 1])
    found = {}
    for seed in (0, 1):
        found[("aged", seed, "m", "1h@25C")] = {"ppl": 10.0, "monitor": {"score": 0.0}}
        for condition, loss, score, alarm, recal in (("1d@25C", 1.0, 0.3, True, 10.95), ("1y@25C", 2.0, 0.2, False, 11.0),
                                                     ("1h@80C", 3.0, 0.5, True, 11.0), ("1d@80C", 4.0, 0.6, True, 12.0),
                                                     ("1y@80C", 5.0, 0.7, False, 12.0)):
            found[("aged", seed, "m", condition)] = {"ppl": 10.0 + loss, "monitor": {"score": score + seed / 100,
                                                                                     "recalibrate": alarm}}
            found[("recalibrated", seed, "m", condition)] = {"ppl": recal}
    record = _monitor_outcomes(spec, found, "m")
    # 1d@25C: recalibrating gains (11 − 10.95)/11 < 1 %: an alarm there is false; 1y@25C and 1y@80C gain more: misses
    assert record["judged_readings"] == 10
    assert record["false_alarms_by_outcome"] == 2 and record["misses_by_outcome"] == 4
    at_25 = record["rho_within_temperature"]["25C"]
    # at 25 °C the loss grows with time, and this score falls: the clock orders the readings, the monitor does not
    assert at_25["n"] == 4 and at_25["log_time"] == pytest.approx(1.0) and at_25["monitor"] < 0
    assert record["rho_within_time"]["1d"]["temperature"] == pytest.approx(1.0)
    assert record["rho_within_time"]["1d"]["monitor"] > 0.8
