"""Fresh large tensors with and without transparent huge pages, side by side in one run (romer/huge_pages.py).

    python bench/huge_pages.py                 # 300 fresh 64 MiB tensors written, each setting in its own process
    python bench/huge_pages.py --ballast 16    # the same beside a 16 GiB resident tensor (a 16-layer model's weights)

PyTorch's allocator reads THP_MEM_ALLOC_ENABLE once, so each setting runs in a fresh process; both keep romer's
1 MiB mmap threshold, so every tensor is a new mapping, faulted in as it is written. Prints seconds, user and kernel
CPU seconds per setting and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import ctypes, json, os, sys, time
import torch
ctypes.CDLL("libc.so.6").mallopt(-3, 2**20)
torch.set_num_threads(2)
ballast = torch.ones(int(float(sys.argv[1]) * 2**30 / 2), dtype=torch.bfloat16) if float(sys.argv[1]) else None
count, side = int(sys.argv[2]), 4096
start, cpu = time.perf_counter(), os.times()
for _ in range(count):
    torch.empty(side, side).fill_(1.0)
end = os.times()
print(json.dumps({"seconds": time.perf_counter() - start, "user": end.user - cpu.user, "kernel": end.system - cpu.system}))
"""


def measure(huge: bool, ballast_gib: float, count: int) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(ballast_gib), str(count)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ballast", type=float, default=0.0, help="GiB held resident beside the churn")
    parser.add_argument("--count", type=int, default=300, help="fresh 64 MiB tensors written")
    args = parser.parse_args()
    mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip() if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled") else "absent"
    print(f"transparent_hugepage: {mode}; {args.count} x 64 MiB written, ballast {args.ballast} GiB")
    small, huge = measure(False, args.ballast, args.count), measure(True, args.ballast, args.count)
    for name, row in (("4 KiB pages", small), ("huge pages", huge)):
        print(f"{name:12s} {row['seconds']:6.2f} s  user {row['user']:5.1f} s  kernel {row['kernel']:5.1f} s")
    print(f"ratio (4 KiB / huge): {small['seconds'] / huge['seconds']:.2f}x wall, {small['kernel'] / max(huge['kernel'], 1e-9):.2f}x kernel")


if __name__ == "__main__":
    main()
