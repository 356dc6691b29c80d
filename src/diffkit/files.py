"""Atomic file writes: every file diffkit writes appears whole or not at all.

A crash, a kill or a full disk during a write must never leave half a checkpoint, bundle, cache or picture
where the previous good one was (DESIGN.md "Bad input"). Every writer goes through `atomic_path`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it is synced to disk and renamed over
    `path` (os.replace is atomic on POSIX), on failure it is removed and `path` is left as it was.

    The temporary name keeps `path`'s suffix, so writers that choose a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
