"""`diffkit train` / `diffkit sample` argument handling, run in this process through `diffkit.cli.main`."""

import json

import pytest

from diffkit.cli import main
from diffkit.run_log import read_metrics

from tiny_run import one_thread, write_tiny_toml

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_train_prints_the_config_and_honours_budget_flags(tmp_path, capsys):
    preset = write_tiny_toml(tmp_path)
    run_dir = tmp_path / "run"
    code = main(["train", "--config", str(preset), "train.lr=2e-3", "--max-steps", "2", "--max-minutes", "5",
                 "--run-dir", str(run_dir), "--accelerator", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[train]" in printed and "max_steps = 2" in printed and "lr = 0.002" in printed
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
    (["train", "--resume", "RUN"], "config.json does not exist"),
    (["sample", "RUN"], "config.json does not exist"),
])
def test_mistakes_exit_2_with_one_sentence(tmp_path, capsys, arguments, words):
    preset = write_tiny_toml(tmp_path)
    arguments = [str(preset) if a == "PRESET" else str(tmp_path / "run") if a == "RUN" else a for a in arguments]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert words in error and error.startswith("diffkit: error: ")
