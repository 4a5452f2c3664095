"""The `romer` command line. Each command is a thin shell over the library."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from romer.atomic import require_folder
from romer.campaign.spec import parse_seeds
from romer.errors import RomerError
from romer.noise import parse_noise_spec
from romer.report import console
from romer.report.methods import method_help

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MoE LLMs on noisy analog compute-in-memory hardware: simulate, diagnose, calibrate.")


def _console(stderr: bool = False) -> Console:
    # A table piped to a file or a log is read later, not in an 80-column terminal: keep its columns whole.
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=160 if piped else None)


out = _console()
err = _console(stderr=True)

ModelOpt = typer.Option("romer-tiny", "--model", "-m", help="romer-tiny, a local Hugging Face folder, or a hub id.")
DataOpt = typer.Option("stdlib", "--data", "-d", help="stdlib, wikitext2, wikitext103, or a local .txt/.jsonl file.")
SplitOpt = typer.Option(None, "--split", help="Corpus split (train, calib, test); default: the corpus's test split.")
WindowOpt = typer.Option(None, "--window", help="Tokens per window; default: the model's context, at most 2048.")
StrideOpt = typer.Option(None, "--stride", help="Tokens between window starts; default: the window (disjoint windows, "
                                                 "as every campaign).")
BatchOpt = typer.Option(8, "--batch-size", help="Windows per forward pass.")
MaxTokensOpt = typer.Option(None, "--max-tokens", help="Score only the first N tokens of the split (reported).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.")
TrustOpt = typer.Option(False, "--trust-remote-code", help="Allow code and pickle weights shipped with a checkpoint.")
NoiseOpt = typer.Option(None, "--noise", help="Chip: a preset (romer presets), NAME:key=value,..., or a .yaml file.")
SeedsOpt = typer.Option("0", "--seeds", help="Chip instances to simulate: 0,1,2 or 0-4.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of a table.")
MethodOpt = typer.Option("romer", "--method", help=f"Calibration method: {method_help()} (`romer methods` describes "
                                                   "each; `best` is tuned's former name).")
CalibDataOpt = typer.Option(None, "--calib-data", help="Calibration text (corpus name or .txt/.jsonl); default: "
                                                       "the calibration split of --data.")
CalibSetOpt = typer.Option(None, "--set", help="Calibration options as key=value,... (tau=0.25,router=renorm); "
                                               "see CalibrationConfig; a field the method does not read "
                                               "is refused.")




def user_errors(command):
    """A RomerError becomes one line on stderr and exit status 2, never a traceback; Ctrl-C says how to resume."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RomerError as error:
            err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[bold yellow]interrupted:[/] every finished unit is kept (results.jsonl in the --out folder of "
                      "run, sweep and demo); run the same command again to resume", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    return wrapper


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _spec(**fields):
    """The work bench's spec from command-line flags (None: the default)."""
    from romer.campaign import run_spec

    _quiet_transformers()
    return run_spec(**fields)


@app.command("eval")
@user_errors
def eval_command(model: str = ModelOpt, data: str = DataOpt, split: Optional[str] = SplitOpt,
                 window: Optional[int] = WindowOpt, stride: Optional[int] = StrideOpt, batch_size: int = BatchOpt,
                 max_tokens: Optional[int] = MaxTokensOpt, noise: Optional[str] = NoiseOpt, seeds: str = SeedsOpt,
                 device: str = DeviceOpt, dtype: str = DtypeOpt, trust_remote_code: bool = TrustOpt,
                 as_json: bool = JsonOpt) -> None:
    """Perplexity of a model on a corpus split, clean and (with --noise) on simulated chips."""
    from romer.campaign.inspect import evaluate

    config = parse_noise_spec(noise) if noise else None
    chip_seeds = parse_seeds(seeds) if noise else []
    spec = _spec(model=model, data=data, split=split, window=window, stride=stride, batch_size=batch_size,
                 max_tokens=max_tokens, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    record = evaluate(spec, config, chip_seeds)
    if as_json:
        print(json.dumps(record))
        return
    out.print(console.eval_table(record))


def _campaign(config: Optional[str], flags: dict, out_dir: str, force: bool, as_json: bool,
              backend: Optional[dict] = None) -> None:
    from romer.campaign import load_run_file, run_campaign, run_spec

    fields = load_run_file(config) if config else {}
    for key in ("seeds",):
        if isinstance(fields.get(key), (str, int)):
            fields[key] = parse_seeds(str(fields[key]))
    fields |= {k: v for k, v in flags.items() if v is not None and v != []}
    _quiet_transformers()
    results = run_campaign(run_spec(**fields), out_dir, force=force, progress=True, backend=_backend(**(backend or {})))
    if as_json:
        print(json.dumps({k: v for k, v in results.items() if k != "spec"}))
        return
    out.print(console.campaign_table(results, width=out.width))
    out.print(f"report: {results['paths']['report']}", highlight=False)


def _backend(name: str = "local", address: Optional[str] = None, workers: Optional[int] = None, cpus: int = 1,
             gpus: float = 0, threads: Optional[int] = None):
    if threads is not None:
        if threads < 1:
            raise RomerError("--threads must be at least 1")
        import torch

        torch.set_num_threads(threads)
    if name == "local":
        return None
    if name != "ray":
        raise RomerError(f"unknown --backend '{name}'; use local or ray")
    from romer.scale.ray_backend import RayBackend

    return RayBackend(address=address, workers=workers, cpus=cpus, gpus=gpus)


def parse_vary(items: list[str]) -> dict:
    """`--vary FIELD=v1,v2` (given once or twice) as {field: [values]}; values read as YAML scalars."""
    from romer.assignments import scalar, split_assignment

    vary = {}
    error = "cannot read --vary '{item}'; write FIELD=v1,v2,... (e.g. adc_offset_sigma=0,1,2)"
    for item in items:
        field, raw = split_assignment(item, error)
        values = [scalar(field, v) for v in raw.split(",") if v.strip()]
        if not values:
            raise RomerError(error.format(item=item))
        if field in vary:
            raise RomerError(f"--vary names '{field}' twice; give each field once")
        vary[field] = values
    return vary


def _batch_size(text: Optional[str]):
    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise RomerError(f"cannot read --batch-size '{text}'; pass a positive integer or auto") from None


def _split_list(text: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


ConfigOpt = typer.Option(None, "--config", help="YAML file of run options (the keys of `romer run --help`); "
                                                 "flags given on the command line win.")
OutOpt = typer.Option("runs/latest", "--out", help="Output folder; a rerun resumes what it holds.")
ForceOpt = typer.Option(False, "--force", help="Discard results of a different configuration in --out.")
MethodsOpt = typer.Option(None, "--methods", help=f"Comma list of methods ({method_help()}); default "
                                                   "none,romer,tuned.")
TasksOpt = typer.Option(None, "--tasks", help="Comma list of lm-eval tasks (e.g. romer_pycloze, piqa, arc_easy).")
BackendOpt = typer.Option("local", "--backend", help="local (this process) or ray (a Ray cluster; see README).")
AddressOpt = typer.Option(None, "--address", help="Ray cluster address (ray start --head prints it); default: a "
                                                  "private local Ray instance.")
WorkersOpt = typer.Option(None, "--workers", help="Ray workers (each loads the model once); default: as many as fit.")
WorkerCpusOpt = typer.Option(1, "--worker-cpus", help="CPUs each Ray worker reserves (and torch threads it uses).")
WorkerGpusOpt = typer.Option(0.0, "--worker-gpus", help="GPUs each Ray worker reserves (1 per 80 GB model run).")
ThreadsOpt = typer.Option(None, "--threads", help="torch threads in this process (local back end).")
RunBatchOpt = typer.Option(None, "--batch-size", help="Windows per forward pass, or auto (largest that fits).")


@app.command("run")
@user_errors
def run_command(config: Optional[str] = ConfigOpt, model: Optional[str] = typer.Option(None, "--model", "-m"),
                data: Optional[str] = typer.Option(None, "--data", "-d"), split: Optional[str] = SplitOpt,
                calib_data: Optional[str] = CalibDataOpt,
                noise: Optional[str] = typer.Option(None, "--noise", help="Chip: preset[:k=v,...] or .yaml; default cim-80c."),
                seeds: Optional[str] = typer.Option(None, "--seeds", help="Chip seeds: 0,1,2 or 0-4; default 0-2."),
                methods: Optional[str] = MethodsOpt, tasks: Optional[str] = TasksOpt,
                task_limit: Optional[int] = typer.Option(None, "--task-limit", help="Documents per task."),
                max_tokens: Optional[int] = MaxTokensOpt, window: Optional[int] = WindowOpt,
                stride: Optional[int] = typer.Option(None, "--stride", help="Default: the window (disjoint windows)."),
                options: Optional[str] = CalibSetOpt, out_dir: str = OutOpt, force: bool = ForceOpt,
                device: Optional[str] = typer.Option(None, "--device"), dtype: Optional[str] = typer.Option(None, "--dtype"),
                batch_size: Optional[str] = RunBatchOpt, trust_remote_code: bool = TrustOpt, as_json: bool = JsonOpt,
                backend: str = BackendOpt, address: Optional[str] = AddressOpt, workers: Optional[int] = WorkersOpt,
                worker_cpus: int = WorkerCpusOpt, worker_gpus: float = WorkerGpusOpt,
                threads: Optional[int] = ThreadsOpt) -> None:
    """Clean vs noisy vs calibrated over chip seeds, with paired statistics, tasks, report and plots."""
    flags = {"model": model, "data": data, "split": split, "calib_data": calib_data,
             "noise": [noise] if noise else None, "seeds": parse_seeds(seeds) if seeds else None,
             "methods": _split_list(methods), "tasks": _split_list(tasks), "task_limit": task_limit,
             "max_tokens": max_tokens, "window": window, "stride": stride, "device": device, "dtype": dtype,
             "batch_size": _batch_size(batch_size), "trust_remote_code": trust_remote_code or None,
             "calibration": calibration_config("none", options).model_dump(exclude={"method"}, exclude_unset=True)
             if options else None}
    _campaign(config, flags, out_dir, force, as_json,
              dict(name=backend, address=address, workers=workers, cpus=worker_cpus, gpus=worker_gpus, threads=threads))


@app.command("age")
@user_errors
def age_command(model: Optional[str] = typer.Option(None, "--model", "-m"),
                data: Optional[str] = typer.Option(None, "--data", "-d"), calib_data: Optional[str] = CalibDataOpt,
                noise: Optional[str] = typer.Option(None, "--noise", help="Chip with drift and temperature terms; "
                                                    "default pcm-cim."),
                methods: Optional[str] = typer.Option(None, "--methods", help="Comma list; default none,romer "
                                                      "(none is always measured)."),
                seeds: Optional[str] = typer.Option(None, "--seeds", help="Chip seeds: 0,1,2 or 0-4; default 0."),
                options: Optional[str] = CalibSetOpt,
                calibrate_at: Optional[str] = typer.Option(None, "--calibrate-at", help="TIME@TEMPERATURE each "
                                                           "method is calibrated at; default 1h@25C."),
                times: Optional[str] = typer.Option(None, "--times", help="Times since programming, e.g. "
                                                    "1h,1d,1w,1mo,1y; default 1h,1mo,1y."),
                temperatures: Optional[str] = typer.Option(None, "--temperatures", help="°C, e.g. 25,55,80; "
                                                           "default 25,80."),
                reference: bool = typer.Option(True, "--reference/--no-reference", help="Also fit each method afresh "
                                               "at every condition (the recalibrated line)."),
                refresh_steps: Optional[int] = typer.Option(None, "--refresh-steps", help="Also refresh each fitted "
                                                            "calibration at every later condition with this many "
                                                            "steps from the values it carries; default 0 (off)."),
                refresh_lr: Optional[float] = typer.Option(None, "--refresh-lr", help="The refresh's Adam learning "
                                                           "rate; default: the fit's own (retune_lr)."),
                refresh_batch_size: Optional[int] = typer.Option(None, "--refresh-batch-size", help="Sequences per "
                                                                 "refresh step; default: the calibration's batch."),
                max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Evaluation tokens; default 4096."),
                monitor: Optional[str] = typer.Option(None, "--monitor", help="What the drift monitor reads: probe "
                                                      "(a stored probe of calibration text, replayed at each check; "
                                                      "default) or live (windows of later test text)."),
                monitor_tokens: Optional[int] = typer.Option(None, "--monitor-tokens", help="Tokens the monitor "
                                                             "reads per check; default 4096."),
                monitor_floor_windows: Optional[int] = typer.Option(None, "--monitor-floor-windows", help="Reads "
                                                                    "of the unchanged chip at calibration (probe "
                                                                    "replays, or live windows): its floor and spread; "
                                                                    "default 6."),
                alarm_tolerance: Optional[float] = typer.Option(None, "--alarm-tolerance", help="An alarm is "
                                                                "false where recalibrating would lower perplexity by "
                                                                "less than this share; default 0.01."),
                out_dir: str = typer.Option("runs/age", "--out"), force: bool = ForceOpt,
                device: Optional[str] = typer.Option(None, "--device"),
                threads: Optional[int] = ThreadsOpt, as_json: bool = JsonOpt) -> None:
    """A chip in the field: each method calibrated once, then read unchanged from hours to a year after
    programming at several temperatures, beside a recalibration at each; the monitor's drift score against the
    true loss. Resumable; results.json, report.md and aging.png in --out."""
    from romer.campaign.age import run_age
    from romer.campaign.age_spec import age_spec

    try:
        temperature_list = [float(t) for t in _split_list(temperatures)] if temperatures else None
    except ValueError:
        raise RomerError(f"cannot read --temperatures '{temperatures}'; write °C values such as 25,55,80") from None
    require_folder(out_dir, "--out")
    spec = age_spec(model=model, data=data, calib_data=calib_data, noise=noise, methods=_split_list(methods),
                    seeds=parse_seeds(seeds) if seeds else None, calibrate_at=calibrate_at,
                    times=_split_list(times), temperatures=temperature_list, reference=reference,
                    refresh_steps=refresh_steps, refresh_lr=refresh_lr,
                    refresh_batch_size=refresh_batch_size, max_tokens=max_tokens,
                    monitor=monitor, monitor_tokens=monitor_tokens, monitor_floor_windows=monitor_floor_windows,
                    alarm_tolerance=alarm_tolerance, device=device,
                    calibration=calibration_config("none", options).model_dump(exclude={"method"}, exclude_unset=True)
                    if options else None)
    _backend(threads=threads)
    _quiet_transformers()
    results = run_age(spec, out_dir, force=force)
    if as_json:
        print(json.dumps(results))
        return
    out.print(f"report: {results['paths']['report']} (plot: {results['paths']['plot']})", highlight=False)
    for method, record in results["monitor"].items():
        rho = "–" if record["spearman_rho"] is None else f"{record['spearman_rho']:.3f}"
        out.print(f"monitor, {method}: Spearman ρ {rho} over {record['readings']} readings, "
                  f"{record['false_alarms']} false alarms of {record['unchanged_readings']}, "
                  f"{record['alarms']} alarms of {record['readings'] - record['unchanged_readings']} later readings; "
                  f"by outcome: {record['false_alarms_by_outcome']} false alarms, {record['misses_by_outcome']} misses "
                  f"of {record['judged_readings']} judged", highlight=False)


@app.command("sweep")
@user_errors
def sweep_command(config: Optional[str] = ConfigOpt, model: Optional[str] = typer.Option(None, "--model", "-m"),
                  data: Optional[str] = typer.Option(None, "--data", "-d"),
                  noise: Optional[str] = typer.Option(None, "--noise", help="Comma list of chips; default cim-80c."),
                  strengths: Optional[str] = typer.Option(None, "--strengths", help="Comma list of noise strength "
                                                          "multipliers, e.g. 0.5,1,1.5."),
                  vary: Optional[list[str]] = typer.Option(
                      None, "--vary", help="FIELD=v1,v2,... : sweep one noise field (strength included) over these "
                                           "values on every --noise chip; give it twice for a two-field map. The "
                                           "report draws the regime map (recovery per method against the field)."),
                  seeds: Optional[str] = typer.Option(None, "--seeds"), methods: Optional[str] = MethodsOpt,
                  max_tokens: Optional[int] = MaxTokensOpt, options: Optional[str] = CalibSetOpt,
                  out_dir: str = typer.Option("runs/sweep", "--out"), force: bool = ForceOpt,
                  device: Optional[str] = typer.Option(None, "--device"), batch_size: Optional[str] = RunBatchOpt,
                  as_json: bool = JsonOpt, backend: str = BackendOpt, address: Optional[str] = AddressOpt,
                  workers: Optional[int] = WorkersOpt, worker_cpus: int = WorkerCpusOpt,
                  worker_gpus: float = WorkerGpusOpt, threads: Optional[int] = ThreadsOpt) -> None:
    """A grid of chips × strengths × seeds × methods into one folder, resumable, with PPL-vs-noise plots."""
    try:
        strength_list = [float(s) for s in _split_list(strengths)] if strengths else None
    except ValueError:
        raise RomerError(f"cannot read --strengths '{strengths}'; write numbers such as 0.5,1,1.5") from None
    flags = {"model": model, "data": data, "noise": _split_list(noise), "strengths": strength_list,
             "vary": parse_vary(vary) if vary else None,
             "seeds": parse_seeds(seeds) if seeds else None, "methods": _split_list(methods),
             "max_tokens": max_tokens, "device": device, "batch_size": _batch_size(batch_size),
             "calibration": calibration_config("none", options).model_dump(exclude={"method"}, exclude_unset=True)
             if options else None}
    _campaign(config, flags, out_dir, force, as_json,
              dict(name=backend, address=address, workers=workers, cpus=worker_cpus, gpus=worker_gpus, threads=threads))


DEMO = {"model": "romer-tiny", "data": "stdlib", "noise": ["cim-80c"], "seeds": [0, 1, 2],
        # hetero: the published remedy that recovers most on bench/remedies.py's leaderboard (at its own digital share);
        # outlier-retune: ours that recovers most within 1 % digital
        "methods": ["none", "romer", "hetero", "outlier-retune"], "max_tokens": 16384, "routing_tokens": 4096,
        "clean_cost": False,
        # the fit runs 50 steps on 8,192 tokens here, not 200 on 32,768: the demo stays near 2 minutes on 2 cores; the
        # full fit recovers more (docs/results/remedies.md)
        "calibration": {"calib_tokens": 8192, "retune_steps": 50, "retune_eval_every": 10}}


@app.command("demo")
@user_errors
def demo_command(out_dir: str = typer.Option("runs/demo", "--out"), force: bool = ForceOpt,
                 device: str = DeviceOpt, as_json: bool = JsonOpt) -> None:
    """The main job on the embedded default: romer-tiny, stdlib, cim-80c, seeds 0-2, methods none / romer / hetero /
    outlier-retune."""
    _campaign(None, DEMO | {"device": device}, out_dir, force, as_json)


@app.command("profile")
@user_errors
def profile_command(model: str = ModelOpt, data: str = DataOpt, split: Optional[str] = SplitOpt,
                    window: Optional[int] = WindowOpt, batch_size: int = BatchOpt,
                    max_tokens: Optional[int] = MaxTokensOpt, noise: Optional[str] = NoiseOpt,
                    seed: int = typer.Option(0, "--seed", help="Chip instance to simulate with --noise."),
                    out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for profile.json and heatmap.png."),
                    device: str = DeviceOpt, dtype: str = DtypeOpt, trust_remote_code: bool = TrustOpt,
                    as_json: bool = JsonOpt) -> None:
    """Expert load per MoE layer, clean and (with --noise) on one chip instance, with routing fidelity."""
    from romer.campaign.inspect import profile, write_profile

    if seed < 0:
        raise RomerError(f"--seed must be a non-negative integer, got {seed}")
    if out_dir:
        require_folder(out_dir, "--out")
    config = parse_noise_spec(noise) if noise else None
    spec = _spec(model=model, data=data, split=split, window=window, batch_size=batch_size, max_tokens=max_tokens,
                 device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    record = profile(spec, config, seed)
    if out_dir:
        write_profile(record, out_dir)
    if as_json:
        print(json.dumps(record))
        return
    out.print(console.profile_table(record))
    if out_dir:
        out.print(f"wrote {out_dir}/profile.json and {out_dir}/heatmap.png", highlight=False)


@app.command("diagnose")
@user_errors
def diagnose_command(model: str = ModelOpt, data: str = DataOpt, calib_data: Optional[str] = CalibDataOpt,
                     noise: str = typer.Option("cim-80c", "--noise", help="Chip: preset[:k=v,...] or .yaml."),
                     seeds: str = typer.Option("0-2", "--seeds", help="Chip instances: 0,1,2 or 0-4."),
                     tokens: int = typer.Option(16384, "--tokens", help="Calibration tokens measured (whole windows)."),
                     window: Optional[int] = WindowOpt, batch_size: int = BatchOpt,
                     out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for diagnosis.json and "
                                                                                "role_gaps.png."),
                     device: str = DeviceOpt, dtype: str = DtypeOpt, trust_remote_code: bool = TrustOpt,
                     as_json: bool = JsonOpt) -> None:
    """Before calibrating: where the chip's damage sits (per layer and by role) and how much of it router
    calibration can reach at most. Measured on calibration text, never the evaluation split."""
    from romer.campaign.inspect import diagnose, write_diagnosis

    if tokens < 2:
        raise RomerError(f"--tokens must be at least 2, got {tokens}")
    if out_dir:
        require_folder(out_dir, "--out")
    config = parse_noise_spec(noise)
    spec = _spec(model=model, data=data, calib_data=calib_data, window=window, batch_size=batch_size, device=device,
                 dtype=dtype, trust_remote_code=trust_remote_code)
    record = diagnose(spec, config, parse_seeds(seeds), tokens)
    if out_dir:
        write_diagnosis(record, out_dir)
    if as_json:
        print(json.dumps(record))
        return
    for table in console.diagnose_tables(record):
        out.print(table)
    out.print(console.DIAGNOSE_LEGEND, highlight=False)
    out.print(f"[bold]{record['verdict']}[/]", highlight=False)
    if out_dir:
        out.print(f"wrote {out_dir}/diagnosis.json and {out_dir}/role_gaps.png", highlight=False)


def calibration_config(method: str, options: Optional[str]):
    from romer.assignments import parse_assignments
    from romer.calibration import calibration_config as build_config

    fields = parse_assignments(options, "cannot read '{item}' in --set; write key=value,key=value")
    return build_config(**(fields | {"method": method}))


@app.command("calibrate")
@user_errors
def calibrate_command(model: str = ModelOpt, data: str = DataOpt, calib_data: Optional[str] = CalibDataOpt,
                      noise: str = typer.Option("cim-80c", "--noise", help="Chip the calibration is fitted on."),
                      seed: int = typer.Option(0, "--seed", help="Chip instance."),
                      method: str = MethodOpt, options: Optional[str] = CalibSetOpt,
                      save: Optional[str] = typer.Option(None, "--save", help="Write the calibrated model here "
                                                         "(Hugging Face folder + romer_calibration.json)."),
                      force: bool = typer.Option(False, "--force", help="Replace a non-empty --save folder."),
                      max_tokens: Optional[int] = typer.Option(32768, "--max-tokens",
                                                               help="Evaluation tokens of the test split (0: skip)."),
                      device: str = DeviceOpt, dtype: str = DtypeOpt, trust_remote_code: bool = TrustOpt,
                      as_json: bool = JsonOpt) -> None:
    """Calibrate a model on one simulated chip; report test perplexity clean / noisy / calibrated; save it."""
    from romer.campaign.inspect import calibrate_chip

    if seed < 0:
        raise RomerError(f"--seed must be a non-negative integer, got {seed}")
    if max_tokens is not None and max_tokens < 0:
        raise RomerError(f"--max-tokens must be at least 0 (0 skips the evaluation), got {max_tokens}")
    if save:
        require_folder(save, "--save")
    config = calibration_config(method, options)
    chip_config = parse_noise_spec(noise)
    spec = _spec(model=model, data=data, calib_data=calib_data, device=device, dtype=dtype,
                 trust_remote_code=trust_remote_code)
    record = calibrate_chip(spec, config, chip_config, seed, max_tokens or 0, save, force, status=err.status)
    if as_json:
        print(json.dumps(record))
        return
    out.print(console.calibrate_table(record))
    if save:
        out.print(f"saved to {record['saved']}", highlight=False)


noise_app = typer.Typer(help="Chip noise models: fit your own from measurements.", no_args_is_help=True)
app.add_typer(noise_app, name="noise")


@app.command("estimate")
@user_errors
def estimate_command(model: str = ModelOpt, dtype: str = typer.Option("bfloat16", "--dtype"),
                     window: Optional[int] = WindowOpt,
                     batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Default: the largest that fits."),
                     device: str = typer.Option("cuda", "--device", help="Where the run would go: cuda or cpu."),
                     memory_gib: Optional[float] = typer.Option(None, "--memory-gib", help="Device memory to plan for; "
                                                                "default: what is free on --device now (80 on a machine without it)."),
                     trust_remote_code: bool = TrustOpt, as_json: bool = JsonOpt) -> None:
    """The memory a noisy run needs, from the model's config alone (no weights are read)."""
    from romer.campaign.inspect import estimate

    if memory_gib is not None and memory_gib <= 0:
        raise RomerError(f"--memory-gib must be positive, got {memory_gib}")
    if window is not None and window < 2:
        raise RomerError(f"--window must be at least 2, got {window}")
    if batch_size is not None and batch_size < 1:
        raise RomerError(f"--batch-size must be at least 1, got {batch_size}")
    _quiet_transformers()
    record = estimate(model, dtype, window, batch_size, device, memory_gib, trust_remote_code)
    if as_json:
        print(json.dumps(record))
        return
    out.print(console.estimate_table(record))
    times = console.estimate_times(record)
    if times is not None:
        out.print(times)
    out.print(console.estimate_verdict(record), highlight=False)


@app.command("cost")
@user_errors
def cost_command(model: Optional[str] = typer.Option(None, "--model", "-m", help="A model shape to price from its "
                                                     "config alone (every expert equally loaded)."),
                 run: Optional[Path] = typer.Option(None, "--run", help="A romer run's --out folder: price every "
                                                    "method with the routing each chip measured."),
                 chip_cost: str = typer.Option("pcm-64core", "--chip-cost", help="A chip-cost preset or .yaml file "
                                               "(romer cost --presets lists them)."),
                 batch: int = typer.Option(1, "--batch", help="Tokens computed together (1: one token at a time)."),
                 context: Optional[int] = typer.Option(None, "--context", help="Tokens each token attends; default: "
                                                       "1024, or half a run's window."),
                 presets: bool = typer.Option(False, "--presets", help="List the chip-cost presets, or with "
                                              "--chip-cost one preset's values and sources."),
                 trust_remote_code: bool = TrustOpt, as_json: bool = JsonOpt) -> None:
    """Energy and latency per token on a chip, beside the same model all digital (romer.cost)."""
    from romer.cost import chip_cost_names, get_chip_cost
    from romer.cost.inspect import run_bills, shape_bill

    if batch < 1:
        raise RomerError(f"--batch must be at least 1, got {batch}")
    if context is not None and context < 0:
        raise RomerError(f"--context must be 0 or more, got {context}")
    cost = get_chip_cost(chip_cost)
    if presets:
        record = {"presets": chip_cost_names(), "chip_cost": cost.model_dump(mode="json")}
        print(json.dumps(record)) if as_json else out.print(console.chip_cost_table(cost, chip_cost_names()))
        return
    if (model is None) == (run is None):
        raise RomerError("pass one of --model (a shape from its config) or --run (a finished run folder)")
    _quiet_transformers()
    if model is not None:
        record = shape_bill(model, cost, batch, 1024 if context is None else context, trust_remote_code)
        print(json.dumps(record)) if as_json else out.print(console.shape_bill_table(record))
        return
    record = run_bills(run, cost, batch, context)
    print(json.dumps(record)) if as_json else out.print(console.run_bill_table(record))


@app.command("methods")
@user_errors
def methods_command(as_json: bool = JsonOpt,
                    markdown: bool = typer.Option(False, "--markdown", help="Print README's method table.")) -> None:
    """List the calibration methods: the built-in ones and those installed as plugins (entry points `romer.methods`)."""
    from romer.report.methods import method_records, methods_markdown, methods_table

    if as_json:
        print(json.dumps(method_records()))
    elif markdown:
        print(methods_markdown(), end="")
    else:
        out.print(methods_table())


@app.command("presets")
@user_errors
def presets_command(as_json: bool = JsonOpt) -> None:
    """List the noise presets with their parameters, and every noise field with its unit."""
    from romer.noise import get_preset, preset_names

    if as_json:
        print(json.dumps({name: get_preset(name).config.model_dump(mode="json") for name in preset_names()}))
        return
    for line in console.preset_lines():
        out.print(line, highlight=False)
    out.print(console.noise_fields_table())


@noise_app.command("fit")
@user_errors
def noise_fit_command(measurements: str = typer.Argument(..., help="CSV with target_us, measured_us[, temperature_c]."),
                      output: str = typer.Option(..., "--out", help="Preset file to write (.yaml)."),
                      reference_c: Optional[float] = typer.Option(None, "--reference-c",
                                                                  help="Programming temperature; default: the lowest in the file.")) -> None:
    """Fit programming noise (and temperature response) from measured conductances; write a preset."""
    from romer.noise.fit import fit_noise
    from romer.atomic import write_text_atomic

    if not output.endswith((".yaml", ".yml")):
        raise RomerError(f"--out {output} must end in .yaml so that --noise can read it")
    config = fit_noise(measurements, reference_c)
    write_text_atomic(output, config.to_yaml())
    out.print(f"wrote {output}: programming σ(g) = {' + '.join(f'{c:.4g}·(g/g_max)^{i}' for i, c in enumerate(config.prog_coeffs_us))} µS, "
              f"g_max {config.g_max_us:.4g} µS, temperature shift {config.temp_shift_per_c:.3g}/°C ± {config.temp_spread_per_c:.3g}/°C",
              highlight=False)
    out.print(f"use it with --noise {output}  (or {output}:temperature_c=80 for another temperature)", highlight=False)


def main() -> None:
    import warnings

    # a deprecation (a former method name) is one plain line on the command line, not a source location
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    from romer.resident import keep_heap_small

    keep_heap_small()
    app(prog_name="romer")


@app.callback()
@user_errors
def _load_plugins() -> None:
    """Every command starts by loading the calibration plugins: a broken one ends it in one line, exit 2."""
    from romer.calibration.registry import load_plugins

    load_plugins()


if __name__ == "__main__":
    sys.exit(main())
