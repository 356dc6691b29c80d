"""The command line's contract: help works, user mistakes exit 2 with one sentence."""

import subprocess
import sys


def test_module_help_lists_usage():
    result = subprocess.run([sys.executable, "-m", "diffkit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: diffkit" in result.stdout
