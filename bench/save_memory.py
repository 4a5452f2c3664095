"""What saving a calibrated model costs in memory, part by part, on one chip of a model folder (issue 42).

    python bench/save_memory.py --model runs/olmoe-1l [--dtype bfloat16] [--backup disk]

Loads the model, programs one `cim-80c` chip, then measures each step alone (VmHWM reset before it): the visit to
the clean twin (`chip.suspended()`), `save_pretrained` inside it in the checkpoint's original per-expert layout (one
50 GB shard: transformers' default), the same in transformers' fused layout in 2 GB shards (what `save_calibrated`
writes), and `save_pretrained` of the clean model after restore. Prints the peak above the resident set before each.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import romer
from peak_memory import PeakMemory
from romer.noise import apply_noise_, parse_noise_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--backup", default="disk", choices=["auto", "memory", "disk"])
    args = parser.parse_args()
    memory = PeakMemory("cpu")
    model, _ = romer.load_model(args.model, dtype=args.dtype)
    chip = apply_noise_(model, parse_noise_spec("cim-80c"), seed=0, backup=args.backup)

    def measure(name, work) -> None:
        memory.reset()
        before, started = memory.now(), time.perf_counter()
        work()
        print(f"{name}: +{(memory.peak() - before) / 2**30:.2f} GiB over {before / 2**30:.2f} GiB, "
              f"{time.perf_counter() - started:.1f} s", flush=True)

    def save(**options):
        def work():
            folder = tempfile.mkdtemp(dir=".")
            try:
                model.save_pretrained(folder, **options)
            finally:
                shutil.rmtree(folder)
        return work

    def suspended(work):
        def inside():
            with chip.suspended():
                work()
        return inside

    measure("the clean twin's visit (chip.suspended)", suspended(lambda: None))
    measure("save_pretrained inside it, original layout, one shard", suspended(save()))
    measure("save_pretrained inside it, fused layout, 2 GB shards", suspended(
        save(save_original_format=False, max_shard_size="2GB")))
    chip.restore()
    measure("save_pretrained of the clean model, original layout", save())


if __name__ == "__main__":
    main()
