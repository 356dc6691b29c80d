"""How the C heap keeps the memory of freed tensors: in the process, not handed back to the OS at every forward.

PyTorch's CPU tensors come from the C library's `malloc`. On Linux that is glibc's, which serves a block of
M_MMAP_THRESHOLD bytes or more by mmap and unmaps it again on free, and hands the top of its heap back to the OS
once M_TRIM_THRESHOLD bytes of it are free. Both thresholds are dynamic by default (from 128 KiB, rising to the
largest block freed so far, at most 32 MiB), so the activations of a network evaluation (a few to tens of MB
each, allocated and freed in the same pattern at every step) keep crossing them: the memory can go back to the OS
after one evaluation and be faulted in again, page by page, by the next (a (64, 72, 32, 32) float32 activation is
4,608 pages), or not, depending on where the process's other objects landed in the heap. Fixing the thresholds
(mmap only above 32 MiB, glibc's largest; trim only past 1 GiB free) keeps that memory in the heap and reuses it,
the way PyTorch's CUDA caching allocator does on a GPU. The cost: up to 1 GiB of freed memory may stay with the
process instead of returning to the OS (never more than it once used).

`configure_allocator()` sets both with glibc's `mallopt` (it takes effect at once, so it may run after torch is
imported); it does nothing where the C library is not glibc, and leaves glibc alone when the user has tuned malloc
(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `GLIBC_TUNABLES` with glibc.malloc) or set
`DIFFKIT_MALLOC=default`. The command line, `diffkit.train` and `diffkit.load` call it; measured in
benchmarks/train_speed.py, where every process (diffkit's and diffusers') runs with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from diffkit.errors import DiffkitError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h parameter numbers
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 1024 * 1024 * 1024
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
CHOICES = ("tuned", "default")

_configured: bool | None = None  # what configure_allocator did in this process (None: not asked yet)


def user_tuned_malloc(environment: dict[str, str]) -> bool:
    """True when the environment already tunes glibc's malloc (its MALLOC_* variables or GLIBC_TUNABLES)."""
    return any(name in environment for name in USER_SETTINGS) or "glibc.malloc" in environment.get("GLIBC_TUNABLES",
                                                                                                   "")


def requested_allocator(value: str | None) -> str:
    """What `DIFFKIT_MALLOC` asks for: "tuned" (unset or empty) or "default" (glibc's own dynamic thresholds)."""
    choice = (value or "tuned").strip().lower() or "tuned"
    if choice not in CHOICES:
        raise DiffkitError(f"DIFFKIT_MALLOC must be one of {', '.join(CHOICES)}, got {value!r}.")
    return choice


def configure_allocator() -> bool:
    """Keep freed tensor memory in the heap (glibc's mallopt thresholds, see the module docstring); returns whether
    it did. Once per process: later calls return the first answer."""
    global _configured
    if _configured is not None:
        return _configured
    _configured = False
    if requested_allocator(os.environ.get("DIFFKIT_MALLOC")) == "default" or user_tuned_malloc(dict(os.environ)):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; setting either threshold also stops glibc from moving both (no_dyn_threshold).
    _configured = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _configured
