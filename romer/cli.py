"""The `romer` command line. Each command is a thin shell over the library."""

from __future__ import annotations

import functools
import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from romer.atomic import require_folder
from romer.campaign.spec import parse_seeds
from romer.errors import RomerError
from romer.noise import parse_noise_spec

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="MoE LLMs on noisy analog compute-in-memory hardware: simulate, diagnose, calibrate.")
out = Console()
err = Console(stderr=True)

ModelOpt = typer.Option("romer-tiny", "--model", "-m", help="romer-tiny, a local Hugging Face folder, or a hub id.")
DataOpt = typer.Option("stdlib", "--data", "-d", help="stdlib, wikitext2, wikitext103, or a local .txt/.jsonl file.")
SplitOpt = typer.Option(None, "--split", help="Corpus split (train, calib, test); default: the corpus's test split.")
WindowOpt = typer.Option(None, "--window", help="Tokens per window; default: the model's context, at most 2048.")
StrideOpt = typer.Option(None, "--stride", help="Tokens between window starts; default: half the window.")
BatchOpt = typer.Option(8, "--batch-size", help="Windows per forward pass.")
MaxTokensOpt = typer.Option(None, "--max-tokens", help="Score only the first N tokens of the split (reported).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.")
TrustOpt = typer.Option(False, "--trust-remote-code", help="Allow code and pickle weights shipped with a checkpoint.")
NoiseOpt = typer.Option(None, "--noise", help="Chip: a preset (romer presets), NAME:key=value,..., or a .yaml file.")
SeedsOpt = typer.Option("0", "--seeds", help="Chip instances to simulate: 0,1,2 or 0-4.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of a table.")
MethodOpt = typer.Option("romer", "--method", help="Calibration method: none, er, rc, romer, best.")
CalibDataOpt = typer.Option(None, "--calib-data", help="Calibration text (corpus name or .txt/.jsonl); default: "
                                                       "the calibration split of --data.")
CalibSetOpt = typer.Option(None, "--set", help="Calibration options as key=value,... (tau=0.25,router=renorm); "
                                               "see RomerConfig.")




def user_errors(command):
    """A RomerError becomes one line on stderr and exit status 2, never a traceback; Ctrl-C says how to resume."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RomerError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
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
    _print_summary(record)


def _campaign_table(results: dict) -> Table:
    table = Table(title=f"{results['model']} on {results['noise']['name']} (× {results['strength']:g}), "
                        f"{results['dataset']['name']}/{results['dataset']['split']} {results['dataset']['tokens']:,} "
                        f"tokens, seeds {results['methods']['none']['seeds']}: clean PPL {results['clean']['ppl']:.3f}")
    for column in ("method", "PPL mean ± std", "95 % CI", "reduction", "recovery", "load CV", "top-k agr.",
                   "p vs noisy", "clean-model cost"):
        table.add_column(column, justify="right")
    for method, m in results["methods"].items():
        cost = results["calibrated_clean"].get(method)
        p = m.get("vs_none", {}).get("t_pvalue")
        table.add_row("noisy (none)" if method == "none" else method, f"{m['ppl_mean']:.3f} ± {m['ppl_std']:.3f}",
                      f"[{m['ppl_ci95'][0]:.2f}, {m['ppl_ci95'][1]:.2f}]", f"{100 * m['reduction_mean']:+.1f} %",
                      f"{100 * m['recovery_mean']:+.1f} %", f"{m['load_cv_mean']:.3f}", f"{m['topk_agreement_mean']:.3f}",
                      "—" if p is None else f"{p:.3g}", "—" if cost is None else f"{100 * cost['change']:+.2f} %")
    return table


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
    out.print(_campaign_table(results))
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
    import yaml

    vary = {}
    for item in items:
        field, eq, raw = item.partition("=")
        values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        if not eq or not field.strip() or not values:
            raise RomerError(f"cannot read --vary '{item}'; write FIELD=v1,v2,... (e.g. adc_offset_sigma=0,1,2)")
        if field.strip() in vary:
            raise RomerError(f"--vary names '{field.strip()}' twice; give each field once")
        vary[field.strip()] = values
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
MethodsOpt = typer.Option(None, "--methods", help="Comma list of methods (none, er, rc, romer, best); default none,romer,best.")
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
        "methods": ["none", "romer", "best"], "max_tokens": 16384, "routing_tokens": 4096, "clean_cost": False,
        "calibration": {"calib_tokens": 8192}}


@app.command("demo")
@user_errors
def demo_command(out_dir: str = typer.Option("runs/demo", "--out"), force: bool = ForceOpt,
                 device: str = DeviceOpt, as_json: bool = JsonOpt) -> None:
    """The main job on the embedded default: romer-tiny, stdlib, cim-80c, seeds 0-2, methods none / romer / best."""
    _campaign(None, DEMO | {"device": device}, out_dir, force, as_json)


def _print_summary(record: dict) -> None:
    data = record["dataset"]
    table = Table(title="Perplexity", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{record['model']} ({record['model_path']})")
    table.add_row("data", f"{data['name']}/{data['split']}: {data['tokens']:,} tokens, sha256 {data['sha256'][:12]}…")
    table.add_row("window / stride", f"{record['window']} / {record['stride']}")
    table.add_row("perplexity (clean)", f"{record['ppl']:.3f}")
    if "noisy" in record:
        per_seed = ", ".join(f"{n['ppl']:.3f}" for n in record["noisy"])
        table.add_row(f"perplexity ({record['noise']['name']})",
                      f"{record['noisy_ppl_mean']:.3f} ± {record['noisy_ppl_std']:.3f} (seeds {record['seeds']}: {per_seed})")
    out.print(table)


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
    from romer.atomic import write_text_atomic
    from romer.campaign.inspect import profile

    if seed < 0:
        raise RomerError(f"--seed must be a non-negative integer, got {seed}")
    if out_dir:
        require_folder(out_dir, "--out")
    config = parse_noise_spec(noise) if noise else None
    spec = _spec(model=model, data=data, split=split, window=window, batch_size=batch_size, max_tokens=max_tokens,
                 device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    record = profile(spec, config, seed)
    if out_dir:
        from pathlib import Path

        from romer.report.heatmap import load_heatmap

        folder = Path(out_dir)
        write_text_atomic(folder / "profile.json", json.dumps(record, indent=2) + "\n")
        noisy = [layer["frequency"] for layer in record["noisy_layers"]] if config else None
        title = f"{model}: expert share per layer" + (f", {config.name} seed {seed}" if config else "")
        load_heatmap([layer["frequency"] for layer in record["layers"]], noisy, folder / "heatmap.png", title)
    if as_json:
        print(json.dumps(record))
        return
    dataset = record["dataset"]
    table = Table(title=f"Routing profile: {model} on {dataset['name']}/{dataset['split']} ({dataset['tokens']:,} tokens)")
    columns = ["layer", "CV clean", "starved clean", "entropy clean"]
    if config:
        columns += [f"CV {config.name}", "starved noisy", "top-k agreement", "Jaccard", "KL"]
    for column in columns:
        table.add_column(column, justify="right")
    for index, layer in enumerate(record["layers"]):
        row = [str(index), f"{layer['cv']:.3f}", str(layer["starved"]), f"{layer['entropy']:.3f}"]
        if config:
            noisy_layer = record["noisy_layers"][index]
            kl = record["kl"][index]
            row += [f"{noisy_layer['cv']:.3f}", str(noisy_layer["starved"]), f"{record['topk_agreement'][index]:.3f}",
                    f"{record['jaccard'][index]:.3f}", "—" if kl is None else f"{kl:.4f}"]
        table.add_row(*row)
    out.print(table)
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
    from romer.campaign.inspect import diagnose

    if tokens < 2:
        raise RomerError(f"--tokens must be at least 2, got {tokens}")
    if out_dir:
        require_folder(out_dir, "--out")
    config = parse_noise_spec(noise)
    spec = _spec(model=model, data=data, calib_data=calib_data, window=window, batch_size=batch_size, device=device,
                 dtype=dtype, trust_remote_code=trust_remote_code)
    record = diagnose(spec, config, parse_seeds(seeds), tokens)
    if out_dir:
        from pathlib import Path

        from romer.atomic import write_text_atomic
        from romer.report.plots import role_gaps

        folder = Path(out_dir)
        write_text_atomic(folder / "diagnosis.json", json.dumps(record, indent=1) + "\n")
        role_gaps(record, folder / "role_gaps.png")
    if as_json:
        print(json.dumps(record))
        return
    layers = Table(title=f"{model} on {config.name}, seeds {record['seeds']}: {record['tokens']:,} calibration tokens")
    for column in ("layer", "load CV", "starved", "top-k agr.", "systematic", "shift", "input outliers"):
        layers.add_column(column, justify="right")
    for layer in record["layers"]:
        layers.add_row(str(layer["layer"]), f"{layer['load_cv_clean']:.3f} → {layer['load_cv_noisy']:.3f}",
                       f"{layer['starved_clean']} → {layer['starved_noisy']:.1f}", f"{layer['topk_agreement']:.3f}",
                       f"{layer['systematic_share']:.3f}", f"{layer['shift_size']:.3f}",
                       f"{layer['router_input_outlier_ratio']:.1f}×")
    out.print(layers)
    out.print("load CV and starved experts: clean → noisy; systematic: share of the router-logit shift that is a "
              "per-expert offset; shift: its RMS over the clean logits' spread; input outliers: largest over median "
              "per-dimension RMS of the router input", highlight=False)
    gaps = Table(title=f"perplexity gap: clean {record['clean_ppl']:.3f} → noisy {record['noisy_ppl']:.3f}; "
                       f"with perfect routing {record['oracle_routing_ppl']:.3f}")
    for column in ("noise on", "gap (PPL)", "share of the role gaps"):
        gaps.add_column(column, justify="right")
    for role, gap in record["role_gap"].items():
        gaps.add_row(f"{role} only", f"{gap:+.3f}", f"{100 * record['role_share'][role]:.0f} %")
    gaps.add_row("whole chip", f"{record['gap']:+.3f}", f"(role gaps sum to {100 * record['role_sum_over_gap']:.0f} %)")
    out.print(gaps)
    out.print(f"[bold]{record['verdict']}[/]", highlight=False)
    if out_dir:
        out.print(f"wrote {out_dir}/diagnosis.json and {out_dir}/role_gaps.png", highlight=False)


def calibration_config(method: str, options: Optional[str]):
    from romer.calibration import romer_config

    import yaml

    fields = {"method": method}
    for item in filter(None, (options or "").split(",")):
        key, eq, raw = item.partition("=")
        if not eq:
            raise RomerError(f"cannot read '{item}' in --set; write key=value,key=value")
        fields[key.strip()] = yaml.safe_load(raw)
    return romer_config(**fields)


def calibration_tokens(tokenizer, data: str, calib_data: Optional[str]):
    """The calibration stream: --calib-data, or the `calib` split of --data; never the evaluation split."""
    from romer.data import load_corpus
    from romer.evaluation import tokenize_stream

    corpus = load_corpus(calib_data) if calib_data else load_corpus(data, "calib")
    return corpus, tokenize_stream(tokenizer, corpus.text)


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
    import time

    from romer.calibration import calibrate_
    from romer.calibration.persist import save_calibrated
    from romer.data import load_corpus
    from romer.evaluation import default_window, perplexity, tokenize_stream
    from romer.models import load_model
    from romer.noise import apply_noise_, parse_noise_spec

    if seed < 0:
        raise RomerError(f"--seed must be a non-negative integer, got {seed}")
    if max_tokens is not None and max_tokens < 0:
        raise RomerError(f"--max-tokens must be at least 0 (0 skips the evaluation), got {max_tokens}")
    if save:
        require_folder(save, "--save")
    config = calibration_config(method, options)
    chip_config = parse_noise_spec(noise)
    _quiet_transformers()
    test = load_corpus(data, None) if max_tokens else None
    loaded, tokenizer = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    calib_corpus, calib_ids = calibration_tokens(tokenizer, data, calib_data)
    window = default_window(loaded)
    record = {"model": model, "method": method, "noise": chip_config.name, "seed": seed,
              "calib_data": calib_corpus.describe()}
    ids = tokenize_stream(tokenizer, test.text)[:max_tokens] if test else None
    score = lambda label: perplexity(loaded, ids, window, window, progress=True, label=label).ppl
    if ids is not None:
        record["clean_ppl"] = score("clean")
    with apply_noise_(loaded, chip_config, seed) as chip:
        if ids is not None:
            record["noisy_ppl"] = score(f"{chip_config.name} seed {seed}")
        started = time.perf_counter()
        with err.status(f"calibrating ({method})"):
            calibration = calibrate_(loaded, config, calib_ids, chip=chip)
        record["calibration_seconds"] = time.perf_counter() - started
        if ids is not None:
            record["calibrated_ppl"] = score(method)
            record["test"] = {**test.describe(), "tokens": int(ids.numel()), "window": window, "stride": window}
        record["calibration"] = {k: v for k, v in calibration.as_dict().items() if k != "report"}
        if save:
            record["saved"] = str(save_calibrated(loaded, tokenizer, calibration, save, force=force))
        calibration.remove()
    if as_json:
        print(json.dumps(record))
        return
    table = Table(title=f"{model} on {chip_config.name} seed {seed}, method {method}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, label in (("clean_ppl", "perplexity clean"), ("noisy_ppl", "perplexity noisy"),
                       ("calibrated_ppl", f"perplexity {method}")):
        if key in record:
            table.add_row(label, f"{record[key]:.3f}")
    cal = record["calibration"]
    table.add_row("replacements", ", ".join(f"L{r['layer']}: {r['hot']}→{r['cold']}" for r in cal["replacements"]) or "none")
    table.add_row("router transforms", f"{len(cal['router'])} layers")
    table.add_row("digital tensors", ", ".join(cal["digital"]) or "none")
    table.add_row("calibration time", f"{record['calibration_seconds']:.1f} s")
    out.print(table)
    if save:
        out.print(f"saved to {record['saved']}", highlight=False)


noise_app = typer.Typer(help="Chip noise models: fit your own from measurements.", no_args_is_help=True)
app.add_typer(noise_app, name="noise")


def _gib(value: int) -> str:
    return f"{value / 2**30:.2f} GiB"


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
    from romer.scale.memory import estimate_memory, free_device_bytes

    if memory_gib is not None and memory_gib <= 0:
        raise RomerError(f"--memory-gib must be positive, got {memory_gib}")
    if window is not None and window < 2:
        raise RomerError(f"--window must be at least 2, got {window}")
    if batch_size is not None and batch_size < 1:
        raise RomerError(f"--batch-size must be at least 1, got {batch_size}")
    _quiet_transformers()
    on_accelerator = device != "cpu"
    estimate = estimate_memory(model, dtype, window, trust_remote_code, on_accelerator)
    if memory_gib is not None:
        available = int(memory_gib * 2**30)
    elif on_accelerator and not __import__("torch").cuda.is_available():
        available = 80 * 2**30
    else:
        available = free_device_bytes(device)
    fitted = estimate.fit_batch_size(available)
    batch = batch_size or max(fitted, 1)
    peak = estimate.device_bytes(batch)
    if as_json:
        print(json.dumps(estimate.as_dict() | {"available_bytes": available, "batch_size": batch, "peak_bytes": peak,
                                               "fits": peak <= available}))
        return
    count = f"{estimate.parameters / 1e9:.2f} B" if estimate.parameters >= 1e9 else f"{estimate.parameters / 1e6:.1f} M"
    table = Table(title=f"{model}: {count} parameters, {dtype}, window {estimate.window}")
    table.add_column("what")
    table.add_column("memory", justify="right")
    table.add_row("weights", _gib(estimate.weights_bytes))
    table.add_row("programming scratch (largest on-chip slot)", _gib(estimate.programming_bytes))
    table.add_row("routing telemetry (bounded sample)", _gib(estimate.telemetry_bytes))
    table.add_row(f"activations and logits, {batch} × {estimate.window} tokens", _gib(batch * estimate.per_sequence_bytes))
    table.add_row("[bold]peak on the device", f"[bold]{_gib(peak)}")
    table.add_row(f"clean copy for restore() ({estimate.backup})", _gib(estimate.backup_bytes))
    out.print(table)
    verdict = "fits" if peak <= available else "does NOT fit"
    out.print(f"{verdict} in {_gib(available)}; largest batch that fits: {fitted} (use --batch-size auto in romer run)",
              highlight=False)


@app.command("presets")
@user_errors
def presets_command(as_json: bool = JsonOpt) -> None:
    """List the noise presets with their parameters, and every noise field with its unit."""
    from romer.noise import NoiseConfig, get_preset, preset_names

    defaults = NoiseConfig()
    if as_json:
        print(json.dumps({name: get_preset(name).config.model_dump(mode="json") for name in preset_names()}))
        return
    for name in preset_names():
        preset = get_preset(name)
        changed = {k: v for k, v in preset.config.model_dump().items() if k != "name" and v != getattr(defaults, k)}
        out.print(f"[bold]{name}[/]: {preset.summary}")
        out.print(f"  sets: {', '.join(f'{k}={v}' for k, v in changed.items()) or '(defaults)'}", highlight=False)
        out.print(f"  sources: {preset.sources}", highlight=False)
    table = Table(title="Noise fields (override with --noise NAME:field=value,...)")
    for column in ("field", "default", "meaning"):
        table.add_column(column)
    for field, info in NoiseConfig.model_fields.items():
        table.add_row(field, str(getattr(defaults, field)), info.description or "")
    out.print(table)


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
    app(prog_name="romer")


if __name__ == "__main__":
    sys.exit(main())
