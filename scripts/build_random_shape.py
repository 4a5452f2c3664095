"""Write a random-weight model of a published shape to disk, one decoder layer at a time (issue 42).

    python scripts/build_random_shape.py bench/configs/olmoe-1b-7b runs/olmoe-1b-7b-random
    python scripts/build_random_shape.py bench/configs/olmoe-1b-7b runs/olmoe-2l --layers 2

The weights are random (seeded; `random_weights.json` in the folder says so and holds the recipe):
perplexities mean nothing, times and memory are the shape's. An interrupted build resumes.
"""

from __future__ import annotations

import argparse
import sys
import time

from romer.errors import RomerError
from romer.scale.shape import write_random_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a folder with config.json (bench/configs/...)")
    parser.add_argument("out", help="the model folder to write")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers (default: all)")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    folder = write_random_checkpoint(args.config, args.out, layers=args.layers, dtype=args.dtype, seed=args.seed)
    print(f"wrote {folder} in {time.perf_counter() - started:.0f} s (random weights)")


if __name__ == "__main__":
    try:
        main()
    except RomerError as error:
        sys.exit(f"error: {error}")
