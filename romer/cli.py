"""The `romer` command line. Each command is a thin shell over the library."""

from __future__ import annotations

import functools
import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from romer.errors import RomerError

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
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of a table.")


def user_errors(command):
    """A RomerError becomes one line on stderr and exit status 2, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RomerError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def evaluate_clean(model_spec: str, data: str, split: Optional[str], window: Optional[int], stride: Optional[int],
                   batch_size: int, max_tokens: Optional[int], device: str, dtype: str, trust_remote_code: bool,
                   with_load: bool) -> dict:
    """Load, tokenize, score: the record that `eval --json` prints and the demo shows."""
    from romer.data import load_corpus
    from romer.evaluation import default_window, expert_load, perplexity, tokenize_stream
    from romer.models import load_model

    _quiet_transformers()
    corpus = load_corpus(data, split)
    model, tokenizer = load_model(model_spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    ids = tokenize_stream(tokenizer, corpus.text)
    if max_tokens is not None:
        if max_tokens < 2:
            raise RomerError(f"--max-tokens must be at least 2, got {max_tokens}")
        ids = ids[:max_tokens]
    window = window or default_window(model)
    result = perplexity(model, ids, window, stride, batch_size=batch_size, progress=True)
    record = {
        "model": model_spec, "model_path": str(model.name_or_path),
        "dataset": {**corpus.describe(), "tokens": int(ids.numel())},
        "window": result.window, "stride": result.stride, "ppl": result.ppl,
        "nll_mean": result.nll / result.scored_tokens, "scored_tokens": result.scored_tokens,
        "device": device, "dtype": dtype,
    }
    if with_load:
        record["layers"] = [m.as_dict() for m in expert_load(model, ids, window, batch_size, progress=True)]
    return record


@app.command("eval")
@user_errors
def eval_command(model: str = ModelOpt, data: str = DataOpt, split: Optional[str] = SplitOpt,
                 window: Optional[int] = WindowOpt, stride: Optional[int] = StrideOpt, batch_size: int = BatchOpt,
                 max_tokens: Optional[int] = MaxTokensOpt, device: str = DeviceOpt, dtype: str = DtypeOpt,
                 trust_remote_code: bool = TrustOpt, as_json: bool = JsonOpt) -> None:
    """Perplexity of a model on a corpus split (Hugging Face sliding-window semantics)."""
    record = evaluate_clean(model, data, split, window, stride, batch_size, max_tokens, device, dtype,
                            trust_remote_code, with_load=False)
    if as_json:
        print(json.dumps(record))
        return
    _print_summary(record)


@app.command("demo")
@user_errors
def demo_command(device: str = DeviceOpt, as_json: bool = JsonOpt) -> None:
    """The main job on the embedded default: romer-tiny on stdlib/test, perplexity and expert load."""
    record = evaluate_clean("romer-tiny", "stdlib", "test", None, None, 8, None, device, "float32", False,
                            with_load=True)
    if as_json:
        print(json.dumps(record))
        return
    _print_summary(record)
    table = Table(title="Expert load per MoE layer (clean)")
    for column in ("layer", "CV", "entropy", "Gini", "min share", "max share", "starved"):
        table.add_column(column, justify="right")
    for index, layer in enumerate(record["layers"]):
        table.add_row(str(index), f"{layer['cv']:.3f}", f"{layer['entropy']:.3f}", f"{layer['gini']:.3f}",
                      f"{layer['min_share']:.2f}×", f"{layer['max_share']:.2f}×", str(layer["starved"]))
    out.print(table)
    out.print("Shares are relative to the uniform share 1/E; 'starved' counts experts below half of it.")


def _print_summary(record: dict) -> None:
    data = record["dataset"]
    table = Table(title="Perplexity", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{record['model']} ({record['model_path']})")
    table.add_row("data", f"{data['name']}/{data['split']}: {data['tokens']:,} tokens, sha256 {data['sha256'][:12]}…")
    table.add_row("window / stride", f"{record['window']} / {record['stride']}")
    table.add_row("perplexity", f"{record['ppl']:.3f}")
    out.print(table)


def main() -> None:
    app(prog_name="romer")


if __name__ == "__main__":
    sys.exit(main())
