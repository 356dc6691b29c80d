"""Thread settings under load: the choice of thread count from the cores' measured load (diffkit.threads)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diffkit.errors import DiffkitError
from diffkit.threads import available_cores, busy_cores, choose_threads, configure_threads, requested_threads


def test_choose_threads_leaves_busy_cores_alone():
    assert choose_threads(2, 0.0) == 2
    assert choose_threads(2, 0.4) == 2  # a core less than half busy is still ours
    assert choose_threads(2, 1.0) == 1
    assert choose_threads(2, 2.0) == 1  # never zero
    assert choose_threads(8, 2.7) == 5


def test_requested_threads_reads_auto_or_a_count():
    assert requested_threads(None) is None
    assert requested_threads("auto") is None
    assert requested_threads("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(DiffkitError, match="DIFFKIT_THREADS"):
            requested_threads(bad)


@pytest.fixture
def competitor():
    """A process that keeps one core busy while the test runs."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_busy_cores_sees_a_competing_process(competitor):
    assert busy_cores(0.5) > 0.7


def test_auto_leaves_the_busy_core_to_the_competitor(competitor, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    try:
        assert configure_threads("auto") == max(1, available_cores() - 1)
        assert configure_threads("1") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_an_explicit_openmp_setting_stands(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert configure_threads("auto") == torch.get_num_threads()


def test_the_cli_refuses_a_bad_thread_count(diffkit_cli, monkeypatch):
    monkeypatch.setenv("DIFFKIT_THREADS", "zero")
    result = diffkit_cli("data", "list")
    assert result.returncode == 2
    assert result.stderr.strip() == "diffkit: error: DIFFKIT_THREADS must be 'auto' or a positive integer, not 'zero'."
