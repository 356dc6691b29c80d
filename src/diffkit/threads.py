"""How many threads torch may use, chosen so that diffkit slows in proportion to the machine's load.

On a small machine torch's OpenMP threads meet at a barrier after every parallel operation. When another
process keeps a core busy, a diffkit thread that the scheduler parks behind it holds up the others, and
the run slows 10-1000x instead of 2x (`benchmarks/load.py` measures it). Two settings fix that:

- the OpenMP wait policy PASSIVE: a thread that reaches the barrier first sleeps instead of spinning, so the
  core it held goes to the thread it waits for (read by the OpenMP runtime when torch loads, so it is set by
  `prepare_environment()` before the first `import torch` of the command line);
- one thread per *free* core: `configure_threads("auto")` reads how busy the cores are from /proc/stat and
  leaves the busy ones alone.

`DIFFKIT_THREADS` (`auto`, the default, or a count) and the standard `OMP_NUM_THREADS` / `OMP_WAIT_POLICY`
override both, so a user who sets them gets exactly what they asked for.
"""

from __future__ import annotations

import math
import os
import time

from diffkit.errors import DiffkitError

SAMPLE_SECONDS = 0.2  # long enough for /proc/stat's 10 ms ticks to count each core's load to a few per cent
BUSY_THRESHOLD = 0.5  # a core more than half busy with others counts as taken


def prepare_environment() -> None:
    """Set the OpenMP wait policy before torch loads (unless the user chose one)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot, or None where /proc/stat does not exist."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = SAMPLE_SECONDS) -> float:
    """How many cores other processes keep busy now, measured over `seconds` (0.0 where unknown)."""
    before = _cpu_times()
    if before is None:
        return 0.0
    time.sleep(seconds)
    after = _cpu_times()
    total = after[1] - before[1]
    if total <= 0:
        return 0.0
    return (after[0] - before[0]) / total * available_cores()


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def choose_threads(available: int, busy: float) -> int:
    """One thread per core that others leave free, and at least one."""
    taken = math.floor(busy + (1 - BUSY_THRESHOLD))
    return max(1, available - taken)


def requested_threads(value: str | None) -> int | None:
    """The thread count `DIFFKIT_THREADS` asks for: None for auto, else a positive integer."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise DiffkitError(f"DIFFKIT_THREADS must be 'auto' or a positive integer, not {value!r}.")
    return count


def configure_threads(value: str | None = None) -> int:
    """Set torch's intra-op thread count from `value` / DIFFKIT_THREADS / OMP_NUM_THREADS; returns it."""
    import torch

    value = os.environ.get("DIFFKIT_THREADS") if value is None else value
    count = requested_threads(value)
    if count is None and "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()  # the user's own OpenMP setting stands
    if count is None:
        count = choose_threads(available_cores(), busy_cores())
    torch.set_num_threads(count)
    return count
