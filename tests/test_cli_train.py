"""`diffkit train` as a user meets it, run in this process through `diffkit.cli.main`: flags, messages, resume."""

import errno
import json
import os
import pickle

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import diffkit
from diffkit.checkpoint import load_state
from diffkit.cli import main
from diffkit.files import FILE_MODE
from diffkit.run_log import read_metrics

from tiny_run import one_thread, write_tiny_toml

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_train_prints_a_short_summary_and_honours_budget_flags(tmp_path, capsys):
    preset = write_tiny_toml(tmp_path)
    run_dir = tmp_path / "run"
    code = main(["train", "--config", str(preset), "train.lr=2e-3", "--max-steps", "2", "--max-minutes", "5",
                 "--run-dir", str(run_dir), "--accelerator", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "[train]" not in printed and len(printed.splitlines()) <= 4  # not the 50-line config
    for words in ("preset tiny", "dataset synthetic (64 images, 8 px)", "M parameters", "budget 2 steps and 5 minutes",
                  f"run directory {run_dir}"):
        assert words in printed, words
    # The final grid (step 2 is not a multiple of sample_every=3) says it is being drawn; no bar off a terminal.
    assert "drawing the final sample grid (8 images, ddim, 4 steps)" in captured.err
    assert "step/s" not in captured.err and "s/step" not in captured.err
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["max_steps"] == 2 and saved["train"]["max_minutes"] == 5.0
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == [1, 2]
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3", "--accelerator", "cpu"]) == 0
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3]


def test_default_run_directory_is_named_after_the_preset_and_never_reused(tmp_path, monkeypatch):
    preset = write_tiny_toml(tmp_path)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["train", "--config", str(preset), "--max-steps", "1", "train.sample_every=0",
                     "--accelerator", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2"]


@pytest.mark.parametrize("arguments, words", [
    (["train"], "Pass --config"),
    (["train", "--config", "PRESET", "--resume", "somewhere"], "drop --config"),
    (["train", "--config", "PRESET", "train.lrr=1"], "train.lrr"),
    (["train", "--config", "PRESET", "--devices", "0"], "at least 1"),
    (["train", "--config", "PRESET", "--accelerator", "gpu", "--run-dir", "RUN"], "accelerator=gpu"),
    (["train", "--resume", "RUN"], "The run directory RUN does not exist"),
    (["train", "--config", "PRESET", "--max-minutes", "nan"], "--max-minutes must be a positive finite number"),
    (["train", "--config", "PRESET", "--max-minutes", "inf"], "--max-minutes must be a positive finite number"),
    (["train", "--config", "PRESET", "train.lr=inf"], "train.lr=inf"),
    (["train", "--config", "PRESET", "train.lr=nan"], "train.lr=nan"),
    (["sample", "RUN"], "config.json does not exist"),
])
def test_mistakes_exit_2_with_one_sentence(tmp_path, capsys, arguments, words):
    preset = write_tiny_toml(tmp_path)
    arguments = [str(preset) if a == "PRESET" else str(tmp_path / "run") if a == "RUN" else a for a in arguments]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert words.replace("RUN", str(tmp_path / "run")) in error and error.startswith("diffkit: error: ")
    assert len(error.strip().splitlines()) == 1


def train_cli(*arguments: str) -> int:
    """`diffkit train ARGS --accelerator cpu` in this process."""
    return main(["train", *arguments, "--accelerator", "cpu"])


def one_line_error(capsys) -> str:
    """The single stderr line of a failed command (no traceback)."""
    error = capsys.readouterr().err.strip()
    assert error.startswith("diffkit: error: ") and len(error.splitlines()) == 1 and "Traceback" not in error, error
    return error


@pytest.fixture
def trained(tmp_path):
    """A tiny run trained to step 3 (checkpoint at 3, metrics rows 1-3)."""
    run_dir = tmp_path / "run"
    assert train_cli("--config", str(write_tiny_toml(tmp_path)), "--run-dir", str(run_dir), "--max-steps", "3",
                     "train.sample_every=0") == 0
    return run_dir


def test_overrides_are_accepted_after_options(tmp_path):
    run_dir = tmp_path / "run"
    assert train_cli("--config", str(write_tiny_toml(tmp_path)), "--run-dir", str(run_dir), "train.lr=2e-3",
                     "--max-steps", "1", "train.sample_every=0") == 0
    assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == 2e-3


def test_quiet_turns_off_status_lines(tmp_path, capsys):
    assert train_cli("--config", str(write_tiny_toml(tmp_path)), "--run-dir", str(tmp_path / "run"), "--max-steps",
                     "2", "--quiet") == 0
    assert "drawing" not in capsys.readouterr().err


def test_resume_with_a_config_of_another_model_size_names_the_keys(trained, capsys):
    saved = json.loads((trained / "config.json").read_text())
    saved["model"]["base_channels"] = 32
    (trained / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    assert train_cli("--resume", str(trained), "--max-steps", "5") == 2
    error = one_line_error(capsys)
    assert "model.base_channels=16 (config.json: 32)" in error and "[model]" in error


def test_resume_keeps_going_past_a_garbage_line_in_metrics(trained, capsys):
    metrics = trained / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([*lines[:2], "garbage,\x01,not a number", *lines[2:]]) + "\n")
    assert train_cli("--resume", str(trained), "--max-steps", "5") == 0
    assert [row["step"] for row in read_metrics(metrics)] == [1, 2, 3, 4, 5]
    assert "diffkit: warning: dropped 1 unreadable line(s)" in capsys.readouterr().err
    assert "garbage" in (trained / "metrics.csv.unreadable").read_text()


def test_resume_survives_the_leftovers_of_two_trainings_in_one_directory(trained):
    # Case 1: a second training wrote the same directory before the lock existed: its header and rows are mixed
    # into metrics.csv, and a killed writer left temporary files behind.
    metrics = trained / "metrics.csv"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([*lines, *lines, lines[1]]) + "\n")  # a second header, every step twice
    leftovers = [trained / ".state.4242.partial.ckpt", trained / "samples" / ".step_0000002.4242.partial.png"]
    for leftover in leftovers:
        leftover.write_bytes(b"half")
    assert train_cli("--resume", str(trained), "--max-steps", "5") == 0
    assert [row["step"] for row in read_metrics(metrics)] == [1, 2, 3, 4, 5]
    assert not any(leftover.exists() for leftover in leftovers)
    # Case 2: a training died before its first checkpoint; a new one in that directory starts a clean log.
    fresh = trained.parent / "fresh"
    fresh.mkdir()
    (fresh / "metrics.csv").write_text(metrics.read_text())
    (fresh / "config.json").write_text((trained / "config.json").read_text())
    assert train_cli("--config", str(trained.parent / "tiny.toml"), "--run-dir", str(fresh), "--max-steps", "2",
                     "train.sample_every=0") == 0
    assert [row["step"] for row in read_metrics(fresh / "metrics.csv")] == [1, 2]


def test_a_full_disk_during_the_checkpoint_leaves_every_file_at_the_last_checkpoint(trained, capsys, monkeypatch):
    import diffkit.checkpoint

    config_before, metrics_before = (trained / "config.json").read_text(), (trained / "metrics.csv").read_text()

    def full_disk(state, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(diffkit.checkpoint, "atomic_save", full_disk)
    capsys.readouterr()
    assert train_cli("--resume", str(trained), "--max-steps", "6", "train.lr=5e-4", "train.checkpoint_every=2") == 2
    error = one_line_error(capsys)
    assert "No space left on the device" in error and "the last checkpoint at step 3 is intact" in error
    assert load_state(trained / "state.ckpt")["step"] == 3
    assert (trained / "config.json").read_text() == config_before  # not lr=5e-4 / max_steps=6
    assert (trained / "metrics.csv").read_text() == metrics_before  # no rows past step 3
    monkeypatch.undo()
    assert train_cli("--resume", str(trained), "--max-steps", "6") == 0
    assert [row["step"] for row in read_metrics(trained / "metrics.csv")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("content", ["random", "pickle"])
def test_a_state_file_that_is_not_a_checkpoint_is_one_sentence(trained, capsys, content):
    class Payload:
        def __reduce__(self):
            return (print, ("code from the checkpoint ran",))

    state = trained / "state.ckpt"
    state.write_bytes(os.urandom(4096) if content == "random" else pickle.dumps(Payload()))
    capsys.readouterr()
    assert train_cli("--resume", str(trained), "--max-steps", "5") == 2
    captured = capsys.readouterr()
    assert "code from the checkpoint ran" not in captured.out
    error = captured.err.strip()
    assert error == (f"diffkit: error: {state} is not a diffkit checkpoint (format 1): it is damaged or was written "
                     "by another program; resume another run or start this one afresh.")


def test_resume_below_the_current_step_says_so(trained, capsys):
    capsys.readouterr()
    assert train_cli("--resume", str(trained), "--max-steps", "2") == 2
    assert "is already at step 3, which reaches train.max_steps=2; pass --max-steps above 3" in one_line_error(capsys)


def test_resume_of_a_directory_without_a_checkpoint_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert train_cli("--resume", str(tmp_path / "empty")) == 2
    assert f"{tmp_path / 'empty'} has no state.ckpt, so there is nothing to resume" in one_line_error(capsys)


def test_a_damaged_bundle_is_rewritten_from_the_state_on_resume(trained, monkeypatch):
    import diffkit.train as train_module

    (trained / "model.safetensors").write_bytes(b"not safetensors")
    # The resumed run fails at its first step, before any checkpoint: the bundle must be whole already.
    monkeypatch.setattr(train_module, "diffusion_loss", lambda *args, **keywords: torch.tensor(float("nan")))
    assert train_cli("--resume", str(trained), "--max-steps", "5") == 2
    bundle, state = load_file(str(trained / "model.safetensors")), load_state(trained / "state.ckpt")
    for key, value in bundle.items():
        assert torch.equal(value, state["ema"]["module." + key].float()), key
    diffkit.load(trained)


def write_picture_folder(folder, count: int = 20):
    """`count` small grey PNGs and one file that is not a picture."""
    folder.mkdir()
    for index in range(count):
        Image.new("L", (8, 8), color=index * 10).save(folder / f"{index:02d}.png")
    (folder / "broken.png").write_bytes(b"not a png")


def folder_overrides(tmp_path, folder) -> list[str]:
    return ["data.dataset=folder", f"data.options={{ path = '{folder}' }}", f"data.data_dir={tmp_path / 'cache'}",
            "model.num_classes=0", "--max-steps", "1", "train.sample_every=0"]


def test_skipped_pictures_are_a_diffkit_warning_and_strict_names_the_config_key(tmp_path, capsys):
    folder = tmp_path / "pictures"
    write_picture_folder(folder)
    preset = str(write_tiny_toml(tmp_path))
    assert train_cli("--config", preset, "--run-dir", str(tmp_path / "run"), *folder_overrides(tmp_path, folder)) == 0
    error = capsys.readouterr().err
    assert "diffkit: warning: Skipped 1 unreadable image file(s)" in error and "UnreadableImagesWarning" not in error
    assert train_cli("--config", preset, "--run-dir", str(tmp_path / "strict"), *folder_overrides(tmp_path, folder),
                     "data.options.strict=true") == 2
    error = one_line_error(capsys)
    assert "broken.png" in error and "set data.options.strict=false to skip them" in error and "--strict" not in error


def test_every_file_of_a_run_gets_the_normal_mode(trained):
    for name in ("config.json", "model.safetensors", "state.ckpt", "metrics.csv"):
        assert (trained / name).stat().st_mode & 0o777 == FILE_MODE, name


def test_tensorboard_events_hold_the_logged_losses(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [event.step for event in losses] == [1, 2, 3]
    expected = [row["loss"] for row in read_metrics(trained / "metrics.csv")]
    assert [event.value for event in losses] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("quiet", [False, True])
def test_the_progress_bar_goes_to_a_terminal_on_stderr_unless_quiet(tmp_path, capsys, monkeypatch, quiet):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert train_cli("--config", str(write_tiny_toml(tmp_path)), "--run-dir", str(tmp_path / "run"), "--max-steps",
                     "2", "train.sample_every=0", *(["--quiet"] if quiet else [])) == 0
    captured = capsys.readouterr()
    assert "2/2 [" not in captured.out  # the bar never goes to stdout
    assert ("2/2 [" in captured.err) is not quiet
