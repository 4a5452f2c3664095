"""`stdlib`: the running interpreter's standard-library sources as a corpus.

Every Python install carries this text, so the demo, the tests and the embedded model's
training need no download and romer ships no copied text.

Split rule (by file, independent of file-system order): a file's bucket is
``int(sha256(relative_posix_path)[:8], 16) % 100``; buckets 0-2 are `test`, 3-5 `calib`,
the rest `train`. Within a split, files are joined in sorted path order, separated by a
blank line. Test suites (`test/`, `tests/`, `idle_test/`), installed packages
(`site-packages/`) and caches are left out: they are not the standard library's own code
and the test suite alone is several times larger than the rest.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

SPLITS = ("train", "calib", "test")
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
_TEST_BUCKETS = range(0, 3)
_CALIB_BUCKETS = range(3, 6)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str) -> str:
    """The split a file belongs to, from its path relative to the stdlib root (posix form)."""
    bucket = int(hashlib.sha256(relative_path.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _CALIB_BUCKETS:
        return "calib"
    return "train"


def source_files(root: Path | None = None) -> list[str]:
    """Relative posix paths of the stdlib's own `.py` files, sorted."""
    root = root or stdlib_root()
    paths = []
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if _EXCLUDED_DIRS.isdisjoint(relative.split("/")[:-1]):
            paths.append(relative)
    return sorted(paths)


def split_documents(split: str, root: Path | None = None) -> list[str]:
    root = root or stdlib_root()
    return [(root / relative).read_bytes().decode("utf-8", errors="replace")
            for relative in source_files(root) if split_of(relative) == split]
