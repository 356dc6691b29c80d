"""Atomic file writes: every file diffkit writes appears whole or not at all.

A crash, a kill or a full disk during a write must never leave half a checkpoint, bundle, cache or picture
where the previous good one was (DESIGN.md "Bad input"). Every writer goes through `atomic_path`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Some writers (safetensors) create files 0600; the renamed file gets the mode any new file would get.
FILE_MODE = 0o666 & ~_umask()


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
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
