"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from romer.crashpoints import crash_point


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)` fills a temporary sibling of `path` (text, safetensors, anything), which is synced to disk
    and renamed onto `path`; on any failure the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(temporary))
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        crash_point("file-before-rename")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda temporary: temporary.write_text(text))


def require_folder(path: str | Path, option: str) -> Path:
    """`path` as an output folder: it may not exist yet, but it must not be a file (checked before any work)."""
    from romer.errors import RomerError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RomerError(f"{option} {path} is a file, not a folder; choose a folder for the output")
    return path
