"""Shared test helpers: run the CLI as a user would, against this checkout's source."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
# In-process `main()` calls would otherwise pick threads by the machine's load; tests pin one (see DESIGN.md).
os.environ.setdefault("DIFFKIT_THREADS", "1")


def run_diffkit(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m diffkit ARGS` in a fresh process that imports this checkout's source."""
    # Tiny test models run fastest on one thread (and do not fight other processes for the cores).
    environment = dict(os.environ, PYTHONPATH=str(SOURCE))
    environment.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, "-m", "diffkit", *args],
        capture_output=True, text=True, cwd=cwd, env=environment, timeout=timeout,
    )


@pytest.fixture
def diffkit_cli():
    """The `run_diffkit` function, as a fixture."""
    return run_diffkit
