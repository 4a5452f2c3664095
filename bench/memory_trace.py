"""Where a romer command's resident memory goes: run it in this process and sample the main thread's stack.

    python bench/memory_trace.py --out runs/trace.json -- run --model runs/olmoe-1l --dtype bfloat16 ...

Every --every seconds a sampler thread reads the process's resident set (VmRSS) and the innermost romer
frames of the main thread. At the end it prints the high-water mark (VmHWM), the resident set at the
highest sample with the stack that held it, and for each romer function the highest resident set seen
while it ran and the seconds it was on the stack (wall time, not CPU time): a stage's cost, read from
one real run. The samples go to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def romer_stack(frame) -> list[str]:
    stack = []
    while frame is not None:
        path = frame.f_code.co_filename
        if "/romer/" in path and "/bench/" not in path:
            stack.append(f"{Path(path).stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return stack[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--out", default=None, help="write every sample here (JSON)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then a romer command and its options")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    main_thread = threading.main_thread().ident
    samples: list[tuple[float, int, list[str]]] = []
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not done.wait(args.every):
            frame = sys._current_frames().get(main_thread)
            samples.append((time.perf_counter() - started, status_kib("VmRSS"), romer_stack(frame)))

    threading.Thread(target=sample, daemon=True).start()
    from romer.cli import app

    code = 0
    try:
        app(command, standalone_mode=False)
    except SystemExit as stop:
        code = stop.code or 0
    except Exception as error:  # the stages up to the failure are still worth reading
        print(f"the command failed: {type(error).__name__}: {error}", file=sys.stderr)
        code = 1
    finally:
        done.set()
    peak = max(samples, key=lambda s: s[1]) if samples else (0, 0, [])
    by_function: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for _, rss, stack in samples:
        for name in dict.fromkeys(stack):
            by_function[name][0] = max(by_function[name][0], rss)
            by_function[name][1] += args.every
    gib = 2**20
    print(f"\nVmHWM {status_kib('VmHWM') / gib:.2f} GiB; highest sample {peak[1] / gib:.2f} GiB at {peak[0]:.0f} s in "
          + " > ".join(peak[2][-6:]))
    print(f"{'function':60s} {'max RSS GiB':>11s} {'seconds':>8s}")
    for name, (rss, seconds) in sorted(by_function.items(), key=lambda kv: -kv[1][1])[:40]:
        print(f"{name:60s} {rss / gib:11.2f} {seconds:8.1f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": command, "vmhwm_kib": status_kib("VmHWM"),
                                              "samples": samples}))
    sys.exit(code)


if __name__ == "__main__":
    main()
