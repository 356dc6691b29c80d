"""The heap keeps freed tensor memory (allocator.py): counted as page faults in a fresh process, and the switches."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from diffkit import allocator
from diffkit.errors import DiffkitError

SOURCE = str(Path(__file__).resolve().parents[1] / "src")

# A 16 MiB activation (a (64, 64, 32, 32) float32 tensor) allocated and freed in a fresh process: where glibc put
# it (mallinfo2's hblkhd: bytes in mmapped blocks) and what the heap still holds once it is freed (fordblks: free
# bytes kept), then twenty 1 MiB activations written and freed ten times over and the page faults that cost.
PROBE = """
import ctypes, resource, torch
from diffkit.allocator import configure_allocator
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
configured = configure_allocator()
activation = torch.empty(4 * 1024 * 1024).fill_(1.0)
mapped = libc.mallinfo2().hblkhd
del activation
kept = libc.mallinfo2().fordblks
def forward():
    tensors = [torch.empty(256 * 1024).fill_(1.0) for _ in range(20)]
    del tensors
for _ in range(3):
    forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    forward()
print(configured, mapped, kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
MIB = 1024 * 1024


def probe(setting: str) -> tuple[bool, int, int, int]:
    """(configure_allocator's answer, mmapped bytes holding the 16 MiB tensor, free bytes the heap kept after it,
    page faults of ten rounds of 20 MiB) in a fresh process with DIFFKIT_MALLOC=setting."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_"))}
    environment.update(DIFFKIT_MALLOC=setting, PYTHONPATH=SOURCE, OMP_NUM_THREADS="1")
    output = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True,
                            check=True).stdout.split()
    return output[0] == "True", int(output[1]), int(output[2]), int(output[3])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's malloc settings")
def test_tuned_heap_keeps_freed_activations():
    configured, mapped, kept, faults = probe("tuned")
    assert configured
    assert mapped < 16 * MIB and kept >= 16 * MIB, (mapped, kept)  # from the heap, and kept there once freed
    assert faults < 20 * MIB * 10 / 4096 / 10, faults  # under a tenth of the pages the rounds wrote


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's malloc settings")
def test_glibc_defaults_map_the_activation_and_give_it_back():
    configured, mapped, kept, _ = probe("default")
    assert not configured
    # glibc's first threshold is 128 KiB: the tensor is an mmapped block, unmapped (not kept) when freed.
    assert mapped >= 16 * MIB and kept < 16 * MIB, (mapped, kept)


def test_user_malloc_settings_are_left_alone():
    assert allocator.user_tuned_malloc({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    assert not allocator.user_tuned_malloc({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512", "PATH": "/bin"})


def test_configure_does_nothing_when_asked_for_glibc_defaults(monkeypatch):
    monkeypatch.setattr(allocator, "_configured", None)
    monkeypatch.setenv("DIFFKIT_MALLOC", "default")
    assert allocator.configure_allocator() is False


def test_configure_skips_a_user_tuned_malloc(monkeypatch):
    monkeypatch.setattr(allocator, "_configured", None)
    monkeypatch.delenv("DIFFKIT_MALLOC", raising=False)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert allocator.configure_allocator() is False


def test_a_bad_setting_is_one_sentence(monkeypatch):
    assert allocator.requested_allocator(None) == "tuned" and allocator.requested_allocator(" Default ") == "default"
    with pytest.raises(DiffkitError, match="DIFFKIT_MALLOC must be one of tuned, default, got 'fast'"):
        allocator.requested_allocator("fast")


def test_the_command_line_refuses_a_bad_setting(tmp_path):
    environment = {**os.environ, "DIFFKIT_MALLOC": "fast", "PYTHONPATH": SOURCE, "DIFFKIT_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "diffkit", "viz", "schedules", "--out", str(tmp_path / "s.png")],
                            env=environment, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "diffkit: error: DIFFKIT_MALLOC must be one of tuned, default, got 'fast'."
    assert not (tmp_path / "s.png").exists()
