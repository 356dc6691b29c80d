"""Progress bars for work that takes more than a few seconds: one function every long loop goes through.

A bar is a tqdm bar on stderr, drawn only when stderr is a terminal (tqdm's `disable=None`) and not silenced
with `set_quiet(True)` (the command line's `--quiet`), so pipes, logs and tests get no bar characters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from diffkit.errors import DiffkitError
from diffkit.sampling import Step

Item = TypeVar("Item")
_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (True) or allow (False) every progress bar of this process."""
    global _quiet
    _quiet = bool(quiet)


def stream():
    """The stream bars are drawn on: sys.stderr as it is at the time of the call."""
    return sys.stderr


def progress(items: Iterable[Item], *, total: int | None = None, description: str = "",
             unit: str = "it") -> Iterator[Item]:
    """Iterate over `items`, showing a bar on a terminal's stderr unless quiet; the bar vanishes when done."""
    bar = tqdm(items, total=total, desc=description, unit=unit, file=stream(), leave=False,
               disable=True if _quiet else None, dynamic_ncols=True)
    try:
        yield from bar
    finally:
        bar.close()


def step_bar(total: int | None, initial: int, *, shown: bool = True) -> tqdm:
    """A bar over training steps (updated by hand), on a terminal's stderr only, unless `shown` is False or quiet."""
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=stream(),
                disable=not shown or _quiet or not stream().isatty())


def run_steps(steps: Iterable[Step], *, total: int | None = None, description: str = "sampling",
              keep_all: bool = False) -> list[Step]:
    """Exhaust a sampler's steps behind a progress bar: every Step (keep_all, for animations) or just the last."""
    kept: list[Step] = []
    for step in progress(steps, total=total, description=description, unit="step"):
        if keep_all or not kept:
            kept.append(step)
        else:
            kept[0] = step
    if not kept:
        raise DiffkitError("The sampler yielded no steps.")
    return kept
