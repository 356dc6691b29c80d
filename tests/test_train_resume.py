"""Crash safety through the command line: SIGKILL then --resume is bit-exact, SIGTERM saves and exits 0, and a
run directory is locked while a process trains in it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import diffkit
from diffkit.checkpoint import load_state
from diffkit.config import load_config
from diffkit.run_log import read_metrics
from diffkit.train import Launch, train

from tiny_run import one_thread, write_tiny_toml

SOURCE = Path(__file__).resolve().parents[1] / "src"
single_thread = pytest.fixture(autouse=True)(one_thread)


def one_thread_environment() -> dict[str, str]:
    """This checkout's source, and one torch thread (as the in-process runs use) for identical arithmetic."""
    return dict(os.environ, PYTHONPATH=str(SOURCE), OMP_NUM_THREADS="1")


def start_training(preset: Path, run_dir: Path, overrides: list[str], log: Path,
                   resume: bool = False) -> subprocess.Popen:
    """`python -m diffkit train` (or `--resume`) in the background, its output going to `log`."""
    start = ["--resume", str(run_dir)] if resume else ["--config", str(preset), "--run-dir", str(run_dir)]
    command = [sys.executable, "-m", "diffkit", "train", *start, *overrides, "--accelerator", "cpu"]
    with log.open("w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=run_dir.parent,
                                env=one_thread_environment())


def wait_for(condition, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll every 5 ms until condition() holds; fail with the log if the process ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training ended early ({process.returncode}):\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def test_a_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, diffkit_cli, monkeypatch):
    preset = write_tiny_toml(tmp_path)
    overrides = ["train.max_steps=30", "train.checkpoint_every=5", "train.sample_every=0", "train.log_every=1",
                 "model.dropout=0.1"]  # dropout: the global torch RNG must be restored too
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    train(load_config(preset, overrides), reference_dir, launch=Launch(accelerator="cpu"))

    log = tmp_path / "killed.log"
    process = start_training(preset, killed_dir, overrides, log)
    wait_for(lambda: (killed_dir / "state.ckpt").exists(), process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = load_state(killed_dir / "state.ckpt")["step"]
    assert 5 <= killed_at < 30
    assert (killed_dir / ".lock").read_text().strip() == str(process.pid)  # the dead holder's lock stays behind

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    resumed = diffkit_cli("train", "--resume", str(killed_dir), "--accelerator", "cpu", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # Bit for bit: the same losses, weights, EMA and bundle as the run that was never killed.
    expected, found = read_metrics(reference_dir / "metrics.csv"), read_metrics(killed_dir / "metrics.csv")
    assert [row["step"] for row in found] == list(range(1, 31))
    assert [row["loss"] for row in found] == [row["loss"] for row in expected]
    expected_state, found_state = load_state(reference_dir / "state.ckpt"), load_state(killed_dir / "state.ckpt")
    assert found_state["step"] == expected_state["step"] == 30
    for part in ("model", "ema"):
        for key, value in expected_state[part].items():
            found_value = found_state[part][key]
            assert torch.equal(found_value, value) if torch.is_tensor(value) else found_value == value, (part, key)
    expected_bundle, found_bundle = load_file(str(reference_dir / "model.safetensors")), load_file(
        str(killed_dir / "model.safetensors"))
    assert all(torch.equal(found_bundle[key], value) for key, value in expected_bundle.items())


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    preset = write_tiny_toml(tmp_path)
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    overrides = ["train.max_steps=100000", "train.checkpoint_every=3", "train.sample_every=0",
                 "train.log_every=1"]
    process = start_training(preset, run_dir, overrides, log)
    metrics = run_dir / "metrics.csv"
    wait_for(lambda: (run_dir / "state.ckpt").exists(), process, log)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
    state = load_state(run_dir / "state.ckpt")
    assert 3 <= state["step"] < 100000
    assert read_metrics(metrics)[-1]["step"] == state["step"]
    assert f"stopped by SIGTERM at step {state['step']}" in log.read_text()
    assert diffkit.load(run_dir).config.train.max_steps == 100000


def timed_main(arguments: list[str]) -> subprocess.CompletedProcess:
    """`diffkit.cli.main(arguments)` in a fresh process; stderr ends with its seconds and whether Lightning loaded."""
    script = ("import sys, time; import diffkit.cli; started = time.monotonic(); "
              "code = diffkit.cli.main(sys.argv[1:]); "
              "print(time.monotonic() - started, 'lightning' in sys.modules, sep='\\n', file=sys.stderr); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=300,
                          env=one_thread_environment())


def test_a_second_training_in_a_locked_run_directory_is_refused_at_once(tmp_path):
    preset = write_tiny_toml(tmp_path)
    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    overrides = ["train.max_steps=100000", "train.checkpoint_every=2", "train.sample_every=0", "train.log_every=1"]
    first = start_training(preset, run_dir, overrides, log)
    try:
        wait_for(lambda: (run_dir / "state.ckpt").exists(), first, log)
        config_before = (run_dir / "config.json").read_text()
        for second in (["--config", str(preset), "--run-dir", str(run_dir), "train.lr=0.5"],
                       ["--resume", str(run_dir), "train.lr=0.5"]):
            result = timed_main(["train", *second, "--accelerator", "cpu"])
            assert result.returncode == 2, result.stderr[-3000:]
            refusal, seconds, lightning_loaded = result.stderr.strip().splitlines()
            assert refusal == (f"diffkit: error: {run_dir} is in use: diffkit process {first.pid} is training in it; "
                               "wait for it to finish, stop it, or choose another --run-dir.")
            # Refused before Lightning is even imported, within 2 s of the command starting (Python and torch's
            # own start-up, seconds on this shared machine, is not the command's doing and is not counted).
            assert lightning_loaded == "False" and float(seconds) < 2, (seconds, lightning_loaded)
        assert first.poll() is None  # the first run never noticed
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert (run_dir / "config.json").read_text() == config_before
    state = load_state(run_dir / "state.ckpt")
    assert state["config"]["train"]["lr"] == 1e-3
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == list(range(1, state["step"] + 1))
