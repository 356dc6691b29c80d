"""Shared test helpers: run the CLI as a user would, against this checkout's source."""

from __future__ import annotations

import io
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


class TerminalStream(io.StringIO):
    """A text stream that says it is a terminal, so progress bars draw into it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal_stderr(monkeypatch):
    """Progress bars drawn into a stream that claims to be a terminal (pytest's capture owns sys.stderr)."""
    from diffkit import progress

    progress.set_quiet(False)
    stream = TerminalStream()
    monkeypatch.setattr(progress, "stream", lambda: stream)
    return stream


@pytest.fixture
def bundle_dir(tmp_path):
    """A saved tiny bundle (8x8 grey, 4 classes, cosine T = 100) with random weights."""
    from diffkit.bundle import save_bundle
    from tiny_run import random_network, tiny_config

    config = tiny_config()
    return save_bundle(tmp_path / "bundle", config, random_network(config))
