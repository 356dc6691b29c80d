"""Atomic file writes: every file diffkit writes appears whole or not at all.

A crash, a kill or a full disk during a write must never leave half a checkpoint, bundle, cache or picture
where the previous good one was (DESIGN.md "Bad input"). Every writer goes through `atomic_path`.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from diffkit.errors import DiffkitError


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
    if path.is_dir():  # os.replace would fail naming the temporary file, which the user never chose
        raise DiffkitError(f"{path} is a folder; pass the name of a file to write.")
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


def check_output(path: str | Path, suffixes: Sequence[str], *, folder_allowed: bool = False) -> Path:
    """Refuse a file name a writer cannot honour: an existing folder, or a suffix outside `suffixes`."""
    path = Path(path)
    if path.is_dir() and not folder_allowed:
        raise DiffkitError(f"{path} is a folder; pass the name of a file ending in {', '.join(suffixes)}.")
    if path.suffix.lower() not in suffixes and not (folder_allowed and path.is_dir()):
        found = f"'{path.suffix}'" if path.suffix else "no extension"
        folder = " (or a folder name ending in /)" if folder_allowed else ""
        raise DiffkitError(f"Cannot write {path}: it has {found}; use a name ending in {', '.join(suffixes)}{folder}.")
    return path


def write_json(path: str | Path, record: object) -> Path:
    """Write `record` as indented JSON, atomically (as every other file diffkit writes)."""
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (hashlib's streaming reader)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()
