"""The options the calibration benchmarks share: where results go, which chips and seeds, the
test slice and calibration tokens (the same for every table in docs/results/), torch threads."""

from __future__ import annotations

import argparse

import torch


def calibration_bench_parser(doc: str, out: str, noise: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=out, help="results folder (the bench resumes from it)")
    parser.add_argument("--noise", default=noise)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--max-tokens", type=int, default=16384, help="test tokens (the first N of stdlib/test)")
    parser.add_argument("--calib-tokens", type=int, default=8192, help="calibration tokens from stdlib/calib")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return parser


def parse_calibration_bench(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args
