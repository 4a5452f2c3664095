"""Scale: the Ray back end equals the local one, survives a killed worker, never counts a unit twice;
`romer estimate` counts parameters exactly and fits a batch."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from romer.campaign import run_campaign
from romer.campaign.trials import Trial
from romer.cli import app
from romer.scale import estimate_memory
from tests.test_campaign import spec_for

ray = pytest.importorskip("ray")


# Ray's own liveness checks run on wall-clock timers; on a machine that is busy with other work a worker that is
# slow to start or to answer must not be declared dead (the tests check romer's retries, not Ray's timers)
PATIENT = {"worker_register_timeout_seconds": 600, "health_check_timeout_ms": 60_000,
           "health_check_failure_threshold": 20}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             _system_config=PATIENT)
    yield
    ray.shutdown()


def lines(folder):
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def by_unit(records):
    return {(r["kind"], r.get("noise"), r.get("strength"), r.get("seed"), r.get("method")): r for r in records}


def measured(record):
    return {k: record.get(k) for k in ("ppl", "load_cv", "topk_agreement", "frequency")}


@pytest.fixture
def local_reference(tiny_moe_dir, texts, tmp_path):
    spec = spec_for(tiny_moe_dir, texts, seeds=[0, 1, 2], methods=["none", "rc", "romer"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray worker with one CPU runs torch on one thread: the same float sums
    try:
        run_campaign(spec, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    return spec, by_unit(lines(tmp_path / "local"))


def test_ray_backend_equals_local_bit_for_bit(local_ray, local_reference, tmp_path):
    from romer.scale.ray_backend import RayBackend

    spec, reference = local_reference
    results = run_campaign(spec, tmp_path / "ray", progress=False, backend=RayBackend(workers=2))
    records = lines(tmp_path / "ray")
    assert len(records) == len(reference) == 1 + 2 + 3 * 3
    assert {k: measured(r) for k, r in by_unit(records).items()} == {k: measured(r) for k, r in reference.items()}
    assert results["chips"][0]["methods"]["romer"]["seeds"] == [0, 1, 2]
    assert (tmp_path / "ray" / "report.md").exists()


@pytest.mark.timeout(1800)  # a restarted worker loads the model again: slow, never wrong, on a busy machine
def test_killed_worker_is_retried_and_no_unit_counted_twice(local_ray, local_reference, tmp_path):
    import os

    from romer.scale.ray_backend import RayBackend, TrialWorker

    spec, reference = local_reference
    marker = str(tmp_path / "died")

    class DiesOnce(TrialWorker):
        """The first worker to finish a unit exits mid-trial, once (a local class: Ray ships it by value)."""

        def measured(self, record):
            try:
                with open(marker, "x"):
                    pass
            except FileExistsError:
                return
            os._exit(1)

    seen = []
    run_campaign(spec, tmp_path / "ray", progress=False, backend=RayBackend(workers=2, worker=DiesOnce),
                 on_record=seen.append)
    assert os.path.exists(marker)  # a worker did die
    records = lines(tmp_path / "ray")
    keys = [tuple(by_unit([r])) for r in records]
    assert len(keys) == len(set(keys)) == len(reference) == len(seen)
    assert {k: measured(r) for k, r in by_unit(records).items()} == {k: measured(r) for k, r in reference.items()}

    # a rerun of the finished campaign runs nothing and keeps every line
    again = []
    run_campaign(spec, tmp_path / "ray", progress=False, backend=RayBackend(workers=2), on_record=again.append)
    assert again == [] and len(lines(tmp_path / "ray")) == len(reference)


def test_resume_runs_only_the_missing_trials_on_ray(local_ray, local_reference, tmp_path):
    from romer.scale.ray_backend import RayBackend

    spec, reference = local_reference
    folder = tmp_path / "ray"
    run_campaign(spec.model_copy(update={"seeds": [0]}), folder, progress=False)  # seeds are not in the fingerprint
    first = len(lines(folder))
    redone = []
    run_campaign(spec, folder, progress=False, backend=RayBackend(workers=2), on_record=redone.append)
    assert first == 1 + 2 + 3 and len(redone) == 2 * 3
    assert {(r["seed"], r["method"]) for r in redone} == {(s, m) for s in (1, 2) for m in ("none", "rc", "romer")}


def test_estimate_counts_parameters_exactly_and_fits_a_batch(tiny_moe_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_moe_dir)
    estimate = estimate_memory(str(tiny_moe_dir), dtype="float32", window=64)
    assert estimate.parameters == sum(p.numel() for p in model.parameters())
    assert estimate.weights_bytes == 4 * estimate.parameters
    assert estimate.on_chip_parameters < estimate.parameters  # embeddings and norms stay digital
    assert estimate_memory(str(tiny_moe_dir), dtype="bfloat16", window=64).weights_bytes == 2 * estimate.parameters
    room = estimate.device_bytes(5)
    assert estimate.fit_batch_size(int(room / 0.9) + 1) == 5
    assert estimate.fit_batch_size(estimate.device_bytes(0)) == 0
    text = model.config
    layer_outputs = 24576 * text.num_hidden_layers * text.hidden_size * 2  # the fit tokens' decoder-layer outputs
    assert estimate.retune_host_bytes() == 32768 * (text.vocab_size * 2 + 4) + layer_outputs  # full distributions
    import romer.calibration.teacher as teacher

    held = teacher.Targets.full(torch.randn(1, 32768, text.vocab_size).log_softmax(-1))  # what a teacher really holds
    assert held.probs.nbytes + held.neg_entropy.nbytes == 32768 * (text.vocab_size * 2 + 4)

    bound, teacher.MAX_TEACHER_BYTES = teacher.MAX_TEACHER_BYTES, 0
    try:  # beyond the bound: each position's top 64 (int32 ids and float16 log-probabilities)
        assert estimate.retune_host_bytes() == 32768 * 64 * 6 + layer_outputs
    finally:
        teacher.MAX_TEACHER_BYTES = bound


def test_estimate_cli_and_bad_input(tiny_moe_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["estimate", "--model", str(tiny_moe_dir), "--memory-gib", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["fits"] and report["batch_size"] >= 1 and report["peak_bytes"] <= 2**30
    bad = runner.invoke(app, ["estimate", "--model", str(tiny_moe_dir), "--dtype", "int3"])
    assert bad.exit_code != 0 and "unknown dtype 'int3'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["run", "--model", str(tiny_moe_dir), "--backend", "spark"])
    assert bad.exit_code != 0 and "unknown --backend 'spark'" in bad.output


def test_run_cli_on_ray(local_ray, tiny_moe_dir, texts, tmp_path):
    evaluation, calibration = texts
    result = CliRunner().invoke(app, [
        "run", "--model", str(tiny_moe_dir), "--data", str(evaluation), "--calib-data", str(calibration),
        "--noise", "gaussian:sigma_dev=0.1", "--seeds", "0,1", "--methods", "none,rc", "--max-tokens", "384",
        "--window", "64", "--batch-size", "auto", "--backend", "ray", "--workers", "2", "--out", str(tmp_path),
        "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["chips"][0]["methods"]["rc"]["seeds"] == [0, 1]
    assert len(lines(tmp_path)) == 1 + 1 + 2 * 2


def test_a_worker_error_reaches_the_user_as_one_line(local_ray, tiny_moe_dir, texts, tmp_path):
    from romer.errors import RomerError
    from romer.scale.ray_backend import RayBackend

    spec = spec_for(tiny_moe_dir, texts, seeds=[0], methods=["none"], clean_cost=False)
    with pytest.raises(RomerError, match="needs GPUs reserved per worker"):
        run_campaign(spec.model_copy(update={"device": "cuda"}), tmp_path / "gpu", progress=False,
                     backend=RayBackend(workers=1))
    missing = spec.model_copy(update={"model": str(tmp_path / "not-there")})  # as if absent on the worker's node
    with pytest.raises(RomerError, match="on a Ray worker: model path .*not-there does not exist") as caught:
        list(RayBackend(workers=1, retries=0).run(missing, [Trial("clean")]))
    assert "\n" not in str(caught.value)
