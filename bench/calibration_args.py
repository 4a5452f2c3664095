"""The options the benchmarks share: where results go and torch threads (every bench that writes a results log), and
for the calibration benchmarks also which chips and seeds, the test slice and calibration tokens (the same for every
table in docs/results/)."""

from __future__ import annotations

import argparse

import torch


def bench_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """A parser with the results folder (`--out`) and torch threads (`--threads`)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=out, help="results folder (the bench resumes from it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def calibration_bench_parser(doc: str, out: str, noise: str) -> argparse.ArgumentParser:
    parser = bench_parser(doc, out)
    parser.add_argument("--noise", default=noise)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--max-tokens", type=int, default=16384, help="test tokens (the first N of stdlib/test)")
    parser.add_argument("--calib-tokens", type=int, default=8192, help="calibration tokens from stdlib/calib")
    return parser


def parse_bench(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, with torch's threads set as asked."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
