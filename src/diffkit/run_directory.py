"""The run directory: its lock, and the checks that pick or reopen it for a fresh or a resumed run.

Only one process trains in a run directory at a time. Rank 0 holds an exclusive `flock` on `RUN/.lock` for the
whole training (the kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a stale lock)
and writes its PID into that file, so a second `diffkit train` on the same directory can say who holds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from diffkit.errors import DiffkitError

if TYPE_CHECKING:  # lightning is slow to import; only its type is needed here
    from lightning.fabric import Fabric

    from diffkit.config import Config

try:
    import fcntl
except ImportError:  # Windows: filelock's msvcrt lock instead (it cannot tell the holder's PID)
    fcntl = None

STATE_FILE = "state.ckpt"
CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"
SAMPLES_DIR = "samples"
FIXED_SECTIONS = ("model", "diffusion", "data", "text", "latent")  # what a resumed run may not change


class RunLock:
    """An exclusive lock on a run directory, held from `acquire()` to `release()` (or the process's death)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK_FILE
        self.handle = None

    def acquire(self) -> RunLock:
        """Take the lock at once, or raise a DiffkitError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            from filelock import FileLock, Timeout

            self.handle = FileLock(self.path)
            try:
                self.handle.acquire(timeout=0)
            except Timeout:
                raise DiffkitError(self._held_message("another process")) from None
            return self
        handle = open(self.path, "a+")  # not truncated: the holder's PID must survive a failed attempt
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise DiffkitError(self._held_message(f"process {holder}" if holder else "another process")) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def _held_message(self, holder: str) -> str:
        return (f"{self.path.parent} is in use: diffkit {holder} is training in it; wait for it to finish, stop it, "
                "or choose another --run-dir.")

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race with a process about to lock it)."""
        if self.handle is not None:
            if fcntl is None:
                self.handle.release()
            else:
                self.handle.close()  # closing the descriptor drops the flock
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exception) -> None:
        self.release()


def check_unlocked(directory: str | Path) -> None:
    """Fail at once (before any slow import or data loading) when another process trains in `directory`."""
    if (Path(directory) / LOCK_FILE).exists():
        RunLock(directory).acquire().release()


def check_resumable(directory: str | Path) -> Path:
    """The directory of a run that can be resumed, or a DiffkitError saying what is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DiffkitError(f"The run directory {directory} does not exist; pass --resume the directory of an "
                           "earlier run.")
    for name in (STATE_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise DiffkitError(f"{directory} has no {name}, so there is nothing to resume; start it afresh with "
                               f"--config PRESET --run-dir {directory}.")
    return directory


def prepare_run_dir(fabric: Fabric, config: Config, run_dir: str | Path | None, name: str, resume: bool,
                    fixed: tuple[str, ...] = FIXED_SECTIONS) -> tuple[Path, RunLock | None]:
    """Rank 0 picks or checks the directory and locks it (all ranks agree on it); returns it and rank 0's lock.

    A fresh run writes config.json at once; a resumed run's config.json changes only with its next checkpoint.
    `fixed` names the sections a resumed run may not change (any config with to_dict() works, e.g. an
    autoencoder run's).
    """
    from diffkit.config import save_config

    chosen, problem, lock = None, None, None
    if fabric.is_global_zero:
        try:
            chosen = choose_run_dir(config.to_dict(), run_dir, name, resume, fixed)
            lock = RunLock(chosen).acquire()
            if not resume:  # checked again under the lock: another process may have started here meanwhile
                chosen = choose_run_dir(config.to_dict(), chosen, name, resume, fixed)
        except DiffkitError as error:
            problem = str(error)
            if lock is not None:
                lock.release()
        else:
            remove_leftovers(chosen)
            (chosen / SAMPLES_DIR).mkdir(exist_ok=True)
            if not resume:
                save_config(config, chosen / CONFIG_FILE)
    chosen, problem = fabric.broadcast((str(chosen) if chosen else None, problem))
    if problem:  # every process stops with rank 0's reason instead of waiting for it forever
        raise DiffkitError(problem)
    return Path(chosen), lock


def choose_run_dir(config_dict: dict, run_dir: str | Path | None, name: str, resume: bool,
                   fixed: tuple[str, ...] = FIXED_SECTIONS) -> Path:
    """The directory for a resumed run (checked), a named new one (must not hold a run) or a fresh runs/NAME[-k]."""
    if resume:
        return _checked_resume(config_dict, check_resumable(run_dir), fixed)
    if run_dir is None:
        directory, suffix = Path("runs") / name, 1
        while (directory / STATE_FILE).exists() or (directory / CONFIG_FILE).exists():
            suffix += 1
            directory = Path("runs") / f"{name}-{suffix}"
        return directory
    directory = Path(run_dir)
    if (directory / STATE_FILE).exists():
        raise DiffkitError(f"{directory} already holds a run; pass --resume {directory} to continue it, "
                           "or choose another --run-dir.")
    return directory


def _checked_resume(config_dict: dict, directory: Path, fixed: tuple[str, ...]) -> Path:
    """Refuse to resume with other settings of the `fixed` sections than the run's config.json."""
    try:
        saved = json.loads((directory / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot parse {directory / CONFIG_FILE} ({error}); the run's config is damaged.") from None
    changed = [f"{section}.{key}" for section in fixed for key, value in config_dict[section].items()
               if saved.get(section, {}).get(key) != value]
    if changed:
        free = " and ".join(f"{section}.*" for section in config_dict if section not in fixed)
        raise DiffkitError(f"Cannot resume {directory} with a different {', '.join(changed)}; only {free} "
                           "may change when resuming.")
    return directory


def remove_leftovers(directory: Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (`.NAME.PID.partial.EXT`); returns what was removed."""
    leftovers = [path for folder in (directory, directory / SAMPLES_DIR) for path in folder.glob(".*.partial*")
                 if path.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers
