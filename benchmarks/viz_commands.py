"""Benchmark: wall time of every `diffkit viz` picture with its default settings, each in a fresh process.

A fresh process counts everything a user waits for: Python and library imports, dataset loading and UMAP's
numba just-in-time compilation. Prints a table and writes benchmarks/results/viz_commands.json; the pictures
go to a temporary directory. The acceptance target is under a minute per command on a 2-core CPU,
including `map` on 5,000 32x32 glyphs.

    python benchmarks/viz_commands.py             # the dataset's exact denoiser (--ideal) for trajectory/map
    python benchmarks/viz_commands.py runs/NAME   # also trajectory and map from a trained run
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SOURCE = Path(__file__).resolve().parents[1] / "src"

COMMANDS = {
    "schedules": ["schedules"],
    "forward": ["forward", "--dataset", "glyphs"],
    "trajectory": ["trajectory", "--ideal", "--dataset", "glyphs", "--gif", "{dir}/trajectory.gif"],
    "map": ["map", "--ideal", "--dataset", "glyphs"],
    "toy2d": ["toy2d"],
    "gaussian1d": ["gaussian1d"],
}


def run(name: str, arguments: list[str], directory: str) -> dict:
    """Time one command in a fresh interpreter; returns its seconds, exit code and last output line."""
    command = [sys.executable, "-m", "diffkit", "viz", *[a.format(dir=directory) for a in arguments],
               "--out", f"{directory}/{name}.png"]
    environment = dict(os.environ, PYTHONPATH=str(SOURCE))
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    lines = (result.stdout + result.stderr).strip().splitlines()
    return {"command": name, "seconds": round(seconds, 2), "exit_code": result.returncode,
            "output": lines[-1] if lines else ""}


def main() -> int:
    """Run every command once, print the table, write the JSON."""
    rows = []
    commands = dict(COMMANDS)
    if len(sys.argv) > 1:
        commands["trajectory-run"] = ["trajectory", sys.argv[1], "--gif", "{dir}/trajectory-run.gif"]
        commands["map-run"] = ["map", sys.argv[1], "--dataset", "glyphs"]
    with tempfile.TemporaryDirectory() as directory:
        for name, arguments in commands.items():
            rows.append(run(name, arguments, directory))
            print(f"{name:<15} {rows[-1]['seconds']:>7.1f} s  exit {rows[-1]['exit_code']}  {rows[-1]['output']}",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    report = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "rows": rows}
    (RESULTS / "viz_commands.json").write_text(json.dumps(report, indent=2))
    return 0 if all(row["exit_code"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
