"""romer run / sweep: statistics, resume, schema, offline zero-shot tasks, bad input."""

from __future__ import annotations

import json

import pytest
from scipy import stats
from typer.testing import CliRunner

from romer.campaign import run_campaign, run_spec
from romer.cli import app
from romer.errors import RomerError
from romer.evaluation.statistics import paired_test, recovery, reduction, summarize


def test_summary_matches_the_t_interval():
    result = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result["mean"] == 3.0 and result["std"] == pytest.approx(1.5811388, rel=1e-6)
    assert result["ci95"] == pytest.approx([1.0367568, 4.9632432], rel=1e-6)  # 3 ± 2.7764·1.5811/√5
    low, high = stats.t.interval(0.95, 4, loc=3.0, scale=stats.sem([1, 2, 3, 4, 5]))
    assert result["ci95"] == pytest.approx([low, high])
    assert summarize([7.0]) == {"n": 1, "mean": 7.0, "std": 0.0, "ci95": [7.0, 7.0]}


def test_paired_test_matches_scipy():
    a, b = [10.1, 9.8, 10.4, 10.0, 9.7], [10.9, 10.1, 10.8, 10.3, 10.6]
    result = paired_test(a, b)
    assert result["mean_diff"] == pytest.approx(-0.54)
    assert result["t_pvalue"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result["wilcoxon_pvalue"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert result["wilcoxon_pvalue"] == pytest.approx(0.0625)  # all 5 differences negative: 2/2^5
    assert paired_test([1.0, 2.0], [1.0, 2.0])["t_pvalue"] is None
    assert recovery(9.0, 10.0, 8.0) == 0.5 and reduction(9.0, 10.0) == pytest.approx(0.1)


def spec_for(model_dir, texts, **extra):
    evaluation, calibration = texts
    fields = dict(model=str(model_dir), data=str(evaluation), calib_data=str(calibration),
                  noise=["gaussian:sigma_dev=0.1"], seeds=[0, 1, 2], methods=["none", "rc", "tuned"],
                  max_tokens=64 * 6, window=64, routing_tokens=64 * 4,
                  calibration={"calib_tokens": 64 * 8, "digital_budget": 0.05})
    fields |= extra
    if not {"tuned", "best"} & set(fields["methods"]):  # an option that no method of the run reads is refused
        fields["calibration"] = {k: v for k, v in fields["calibration"].items() if k != "digital_budget"}
    return run_spec(**fields)


class Interrupted(Exception):
    pass


def test_resume_after_interruption_recomputes_nothing_and_matches(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts)
    reference = run_campaign(spec, tmp_path / "whole", progress=False)

    finished = []

    def die_after_five(record):
        finished.append(record)
        if len(finished) == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_campaign(spec, tmp_path / "resumed", progress=False, on_record=die_after_five)
    lines = (tmp_path / "resumed" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 5
    with open(tmp_path / "resumed" / "results.jsonl", "a") as handle:
        handle.write('{"kind": "chip", "torn')  # the process died mid-write
    redone = []
    resumed = run_campaign(spec, tmp_path / "resumed", progress=False, on_record=redone.append)
    total = 1 + 2 + 3 * 3  # clean, 2 methods on the clean model, 3 seeds × 3 methods
    assert len(redone) == total - 5
    assert not {(r["kind"], r.get("seed"), r.get("method")) for r in redone} & \
        {(r["kind"], r.get("seed"), r.get("method")) for r in finished}
    for method in spec.methods:
        assert resumed["methods"][method]["ppl"] == reference["methods"][method]["ppl"]
    again = []
    run_campaign(spec, tmp_path / "resumed", progress=False, on_record=again.append)
    assert again == []  # everything done: nothing recomputed
    fewer = run_campaign(spec.model_copy(update={"seeds": spec.seeds[:2]}), tmp_path / "resumed", progress=False)
    assert fewer["methods"]["none"]["seeds"] == spec.seeds[:2]  # the statistics are of the seeds asked for
    assert fewer["methods"]["none"]["ppl"] == reference["methods"]["none"]["ppl"][:2]


def test_results_schema_and_report(tiny_moe_dir, texts, tmp_path):
    results = run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0, 1], methods=["none", "romer"]), tmp_path,
                           progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in ("model", "dataset", "noise", "seeds", "clean", "methods", "calibrated_clean"):
        assert key in saved
    assert set(saved["dataset"]) >= {"name", "split", "tokens", "sha256"}
    for method in ("none", "romer"):
        entry = saved["methods"][method]
        for key in ("ppl", "ppl_mean", "ppl_std", "ppl_ci95", "reduction_mean", "recovery_mean", "load_cv_mean",
                    "topk_agreement_mean"):
            assert key in entry
        assert len(entry["ppl"]) == 2
    assert saved["methods"]["none"]["recovery_mean"] == 0.0
    assert "romer" in saved["calibrated_clean"]
    # the bill of each chip's measured routing, paired with the uncalibrated chip of the same seed
    assert saved["methods"]["none"]["bill"]["energy_vs_none_mean"] == 1.0
    assert saved["methods"]["romer"]["bill"]["energy_nj_mean"] > 0 and len(saved["methods"]["romer"]["bill"]["per_seed"]) == 2
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all("usage" in r for r in records if r["kind"] == "chip")
    report = (tmp_path / "report.md").read_text()
    assert "| romer |" in report and "perplexity.png" in report
    for png in ("perplexity.png", "expert_load.png", "topk_agreement.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert results["paths"]["report"].endswith("report.md")


def test_a_folder_of_another_configuration_is_refused(tiny_moe_dir, texts, tmp_path):
    out = tmp_path / "out"
    run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none"], clean_cost=False), out, progress=False)
    (out / "notes.txt").write_text("mine")
    other = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none"], clean_cost=False, max_tokens=64 * 5)
    with pytest.raises(RomerError, match="different configuration"):
        run_campaign(other, out, progress=False)
    run_campaign(other, out, force=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"  # --force removes only what romer wrote
    assert "Not measured in this run" in (out / "report.md").read_text()  # clean_cost off: said, not an empty table


def test_sweep_writes_a_noise_plot(tiny_moe_dir, texts, tmp_path):
    results = run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0, 1], methods=["none", "rc"], strengths=[0.5, 1.0],
                                    clean_cost=False), tmp_path, progress=False)
    assert [c["strength"] for c in results["chips"]] == [0.5, 1.0]
    assert (tmp_path / "sweep.png").exists()


def test_vary_one_field_draws_the_regime_map_and_resumes(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, noise=["gaussian:sigma_dev=0.05"], seeds=[0, 1], methods=["none", "rc"],
                    vary={"adc_offset_sigma": [0, 20]}, clean_cost=False)
    results = run_campaign(spec, tmp_path, progress=False)
    chips = results["chips"]
    assert [c["values"] for c in chips] == [{"adc_offset_sigma": 0}, {"adc_offset_sigma": 20}]
    assert chips[1]["noise"] == "gaussian:sigma_dev=0.05,adc_offset_sigma=20"
    assert chips[1]["config"]["adc_offset_sigma"] == 20
    for chip in chips:
        assert chip["noisy_ppl_mean"] == chip["methods"]["none"]["ppl_mean"] and chip["clean_ppl"] > 0
        assert len(chip["methods"]["rc"]["recovery"]) == 2
    assert chips[1]["noisy_ppl_mean"] > chips[0]["noisy_ppl_mean"]  # the offsets damage the model
    assert (tmp_path / "regime_map.png").stat().st_size > 1000
    report = (tmp_path / "report.md").read_text()
    assert "## Regime map" in report and "| adc_offset_sigma |" in report
    again = []
    run_campaign(spec, tmp_path, progress=False, on_record=again.append)
    assert again == []


def test_vary_two_fields_strength_included_draws_heatmaps(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none", "rc"], clean_cost=False,
                    vary={"adc_offset_sigma": [0, 10], "strength": [0.5, 1.0]})
    results = run_campaign(spec, tmp_path, progress=False)
    assert sorted((c["values"]["adc_offset_sigma"], c["strength"]) for c in results["chips"]) == \
        [(0, 0.5), (0, 1.0), (10, 0.5), (10, 1.0)]
    assert (tmp_path / "regime_map.png").stat().st_size > 1000


def test_vary_rejects_what_it_cannot_sweep():
    for vary, message in (({"not_a_field": [1]}, "not a noise field"), ({"roles": ["router"]}, "not a noise field"),
                          ({"adc_offset_sigma": []}, "distinct values"),
                          ({"a": [1], "b": [2], "c": [3]}, "at most 2 fields")):
        with pytest.raises(RomerError, match=message):
            run_spec(vary=vary)
    with pytest.raises(RomerError, match="use one of --vary strength"):
        run_spec(vary={"strength": [1, 2]}, strengths=[0.5])


def test_offline_lm_eval_task_on_the_in_memory_noisy_model(tiny_moe_dir, texts, tmp_path):
    results = run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none"], clean_cost=False,
                                    tasks=["romer_pycloze"], task_limit=8), tmp_path, progress=False)
    clean = results["clean"]["tasks"]["romer_pycloze"]
    noisy = results["methods"]["none"]["tasks"]["romer_pycloze"]
    assert clean["sample_len"] == 8 and 0.0 <= clean["acc"] <= 1.0 and 0.0 <= noisy["acc"] <= 1.0


def test_cli_bad_input_is_one_line(tmp_path):
    runner = CliRunner()
    config = tmp_path / "exp.yaml"
    config.write_text("seeds: 0-1\nnot_an_option: 3\n")
    for args, message in ((["run", "--config", str(config)], "unknown run option 'not_an_option'"),
                          (["run", "--methods", "romer,magic"], "unknown method 'magic'"),
                          (["run", "--seeds", "1-x"], "cannot read seeds"),
                          (["sweep", "--strengths", "a,b"], "cannot read --strengths"),
                          (["sweep", "--vary", "adc_offset_sigma"], "cannot read --vary"),
                          (["sweep", "--vary", "sigma_dev=1", "--vary", "sigma_dev=2"], "names 'sigma_dev' twice"),
                          (["sweep", "--vary", "adc_offset_sigma=-1"], "greater than or equal to 0"),
                          (["run", "--tasks", "no_such_task"], "unknown task 'no_such_task'")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, args
        assert message in result.output and "Traceback" not in result.output


def test_a_retune_unit_records_what_the_fit_added(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none", "retune"], clean_cost=False,
                    calibration={"calib_tokens": 64 * 8, "retune_steps": 2, "retune_eval_every": 1})
    run_campaign(spec, tmp_path, progress=False)
    units = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    fit = next(u for u in units if u.get("method") == "retune")["calibration"]["retune"]
    assert 0 < fit["parameters_added"] <= fit["budget_parameters"]
    assert fit["budget_fraction_used"] == fit["parameters_added"] / fit["chip_weights"] <= 0.01


@pytest.mark.parametrize("how", ["changed default", "older romer without the new option"])
def test_a_resume_refuses_units_made_with_other_calibration_settings(tiny_moe_dir, texts, tmp_path, how):
    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none", "rc"])
    first = run_campaign(spec, tmp_path / "run", progress=False)
    path = tmp_path / "run" / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        if "calibration" in record:
            if how == "changed default":
                record["calibration"]["requested"] = "0" * 16
            else:  # a record written before `requested` existed, by a romer without one of today's options
                del record["calibration"]["requested"]
                del record["calibration"]["config"]["retune_hidden_weight"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(RomerError, match="other calibration settings.*--force"):
        run_campaign(spec, tmp_path / "run", progress=False)
    again = run_campaign(spec, tmp_path / "run", force=True, progress=False)
    assert again["methods"]["rc"]["ppl"] == first["methods"]["rc"]["ppl"]
    assert all(json.loads(line)["calibration"]["requested"] != "0" * 16
               for line in path.read_text().splitlines() if "calibration" in json.loads(line))
    assert run_campaign(spec, tmp_path / "run", progress=False)["methods"] == again["methods"]  # a clean resume


def test_a_folder_made_under_the_former_name_best_resumes_as_tuned(tiny_moe_dir, texts, tmp_path):
    """A run folder written before `best` became `tuned` (its spec, records and fingerprints say `best`) resumes with
    nothing recomputed, under either name, and reports `tuned`."""
    import warnings

    from romer.campaign.trials import requested

    spec = spec_for(tiny_moe_dir, texts, seeds=[0], clean_cost=False)
    out = tmp_path / "old"
    finished = run_campaign(spec, out, progress=False)
    meta = json.loads((out / "run.json").read_text())  # rewrite the folder as the former romer wrote it
    meta["spec"]["methods"] = ["none", "rc", "best"]
    meta["fingerprint"] = spec.fingerprint(["none", "rc", "best"])
    (out / "run.json").write_text(json.dumps(meta))
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for record in records:
        if record.get("method") == "tuned":
            record["method"] = "best"
            record["calibration"]["config"]["method"] = "best"
            record["calibration"]["requested"] = requested(spec, "tuned", "best")
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert requested(spec, "tuned", "best") != requested(spec, "tuned")
    for methods in (["none", "rc", "best"], ["none", "rc", "tuned"]):
        redone = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            resumed = run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0], clean_cost=False, methods=methods), out,
                                   progress=False, on_record=redone.append)
        assert redone == []
        assert "best" not in resumed["methods"]
        assert resumed["methods"]["tuned"]["ppl"] == finished["methods"]["tuned"]["ppl"]


def test_no_plugin_step_options_leaves_the_fingerprint_as_before_they_existed(tiny_moe_dir, texts):
    """A folder calibrated before CalibrationConfig had `step_options` resumes: asking for none hashes the settings
    without the field."""
    import hashlib

    from romer.campaign.trials import calibration_for, requested

    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none", "romer"])
    before = calibration_for(spec, "romer").model_dump(mode="json") | {"method": "romer"}
    del before["step_options"]
    assert requested(spec, "romer") == hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]


def test_a_campaign_option_no_method_reads_is_refused(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none", "rc"], calibration={"retune_rank": 4})
    with pytest.raises(RomerError, match="'retune_rank' is not used by any method of this run .* read by tuned, retune"):
        run_campaign(spec, tmp_path / "out", progress=False)


def test_the_campaign_table_fits_an_80_column_terminal(tiny_moe_dir, texts, tmp_path):
    """Tried as a new user would: a plain 80-column terminal gets method, PPL ± std, recovery, digital share and p, each row on one
    line and nothing cut short; a wide one gets every column."""
    import io

    from rich.console import Console

    from romer.report.console import FULL_TABLE_COLUMNS, campaign_table

    results = run_campaign(spec_for(tiny_moe_dir, texts, seeds=[0, 1], clean_cost=False), tmp_path, progress=False)
    for width, columns in ((80, 5), (FULL_TABLE_COLUMNS, 12)):
        console = Console(width=width, file=io.StringIO(), color_system=None)
        table = campaign_table(results, width=width)
        console.print(table)
        lines = console.file.getvalue().splitlines()
        assert len(table.columns) == columns
        assert all(len(line) <= width for line in lines) and not any("…" in line for line in lines)
        for method in ("noisy (none)", "rc", "tuned"):
            row = [line for line in lines if f" {method} " in line]
            assert len(row) == 1 and f"{results['methods'][method.split()[-1].strip('()')]['ppl_mean']:.3f}" in row[0]


def test_a_campaign_option_a_method_would_not_read_under_its_settings_is_refused_before_loading(texts, tmp_path):
    spec = spec_for(tmp_path / "no-model-here", texts, methods=["none", "tuned"],
                    calibration={"calib_tokens": 64 * 8, "retune_rank": 4})
    with pytest.raises(RomerError, match="'retune_rank' is not used by method 'tuned' under these settings"):
        run_campaign(spec, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before the folder, the model or the data were touched
