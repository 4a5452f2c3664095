"""One writer per results folder.

A campaign holds an exclusive lock on its output folder for its whole life (`filelock`: an OS file
lock, which the operating system releases when its process dies, so a lock left by a killed run is
simply free again). Beside the lock, `.romer-holder.json` names the holder, so a second run on the
same folder refuses at once with one line saying who has it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from romer.atomic import write_text_atomic
from romer.crashpoints import crash_point
from romer.errors import RomerError

LOCK = ".romer.lock"
HOLDER = ".romer-holder.json"


def _holder(folder: Path) -> str:
    try:
        holder = json.loads((folder / HOLDER).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["since"]))
        return f"pid {holder['pid']} on {holder['host']} since {since} ({holder['command']})"
    except (OSError, ValueError, KeyError):
        return "another romer process"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold `folder` for one writer; refuse at once (RomerError) while another process holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RomerError(f"--out {folder} is a file, not a folder; choose a folder for the results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RomerError(f"cannot create the results folder {folder} ({error.strerror}); choose another --out") \
            from None
    lock = FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RomerError(f"{folder} is in use by {_holder(folder)}; wait for it to finish or choose another --out") \
            from None
    except OSError as error:
        raise RomerError(f"cannot write to {folder} ({error.strerror}); choose a folder you can write to") from None
    for stale in folder.glob(f".{HOLDER}.*"):  # a killed holder's unfinished write; the lock is ours now
        stale.unlink(missing_ok=True)
    try:
        write_text_atomic(folder / HOLDER, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                        "since": time.time(),
                                                        "command": " ".join(["romer", *sys.argv[1:]])[:200]}))
        crash_point("lock-taken")
        yield
    finally:
        (folder / HOLDER).unlink(missing_ok=True)
        lock.release()
