"""The distributed path: two CPU processes (Fabric DDP over gloo) train one model; rank 0 writes the bundle."""

import torch

import diffkit
from diffkit.checkpoint import load_state
from diffkit.run_log import read_metrics

from tiny_run import write_tiny_toml


def test_two_processes_train_and_the_rank_zero_bundle_loads(tmp_path, diffkit_cli, monkeypatch):
    preset = write_tiny_toml(tmp_path)
    run_dir = tmp_path / "run"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = diffkit_cli("train", "--config", str(preset), "train.max_steps=4", "train.checkpoint_every=2",
                         "train.sample_every=2", "--devices", "2", "--accelerator", "cpu",
                         "--run-dir", str(run_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert result.stdout.count("stopped by max_steps at step 4") == 1  # only rank 0 reports
    state = load_state(run_dir / "state.ckpt")
    assert state["step"] == 4
    # Each process kept its own random streams: two different noise-generator states were gathered.
    noise = state["random"]["noise"]
    assert noise.shape[0] == 2 and not torch.equal(noise[0], noise[1])
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    bundle = diffkit.load(run_dir)
    images = bundle.sample(4, steps=3, seed=0)
    assert images.shape == (4, 1, 8, 8) and torch.isfinite(images).all()
    # The averaged weights moved away from the zero-initialised output layer during training.
    assert bundle.network.output[-1].weight.abs().sum() > 0
