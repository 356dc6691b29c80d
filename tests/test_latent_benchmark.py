"""benchmarks/latent.py (issue 15): a 4.5-hour benchmark has to survive the end of a session, so its stages resume
their budgets after a signal, finished stages and the judge are reused, and the measured parts are kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from diffkit.train_loop import TrainResult
from tiny_run import one_thread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import latent  # noqa: E402  (a benchmark script, importable once its folder is on the path)

single_thread = pytest.fixture(autouse=True)(one_thread)


class ScriptedTraining:
    """A stand-in for `train`: records how it was called and ends the way it is told to."""

    def __init__(self, stopped_by: str):
        self.stopped_by, self.calls = stopped_by, []

    def __call__(self, config, run_dir: Path, *, resume: bool, name: str, quiet: bool) -> TrainResult:
        self.calls.append(resume)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / latent.STATE_FILE).write_bytes(b"state")
        return TrainResult(run_dir, 7, self.stopped_by, 0.1)


def test_a_stage_stopped_by_a_signal_exits_and_resumes_on_the_next_run(tmp_path):
    stopped = ScriptedTraining("SIGTERM")
    with pytest.raises(SystemExit, match="stopped by SIGTERM at step 7; run the benchmark again"):
        latent.trained_stage(stopped, None, tmp_path / "stage", "stage")
    assert stopped.calls == [False] and not (tmp_path / "stage" / latent.FINISHED).exists()
    finishing = ScriptedTraining("max_minutes")
    assert latent.trained_stage(finishing, None, tmp_path / "stage", "stage") == tmp_path / "stage"
    assert finishing.calls == [True]  # the state the signal left is resumed, not overwritten
    again = ScriptedTraining("max_minutes")
    latent.trained_stage(again, None, tmp_path / "stage", "stage")
    assert again.calls == []  # a finished stage is reused


def test_the_quick_benchmark_measures_once_and_a_second_run_reuses_everything(tmp_path, capsys):
    arguments = ["--quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")]
    report = latent.main(arguments)
    assert {"autoencoder", "latent", "pixel", "judge"} <= set(report)
    planned = json.loads((tmp_path / "runs" / "latent-bench-latent" / "config.json").read_text())["train"]
    autoencoder_minutes = latent.trained_so_far(tmp_path / "runs" / "latent-ae")[1]
    # one CPU budget each: the latent model's diffusion gets what the autoencoder left (a budget stops at the
    # first step past it, so the spent minutes may overshoot by a step; the plan may not)
    assert planned["max_minutes"] == pytest.approx(report["settings"]["minutes"] - autoencoder_minutes)
    written = json.loads((tmp_path / "results" / "latent-quick.json").read_text())
    assert written["pixel"] == report["pixel"]
    ratio = report["pixel"]["sample_seconds_per_image"] / report["latent"]["sample_seconds_per_image"]
    assert f"is {ratio:.1f}x faster per image" in (tmp_path / "results" / "latent-quick.md").read_text()
    capsys.readouterr()
    again = latent.main(arguments)
    output = capsys.readouterr().out
    # the autoencoder is reused, the measured diffusion models are not even loaded, and nothing trains
    assert output.count("finished earlier") == 1 and "diffkit: run directory" not in output
    assert {key: again[key] for key in ("autoencoder", "latent", "pixel", "judge")} == \
        {key: report[key] for key in ("autoencoder", "latent", "pixel", "judge")}


def test_a_smoke_run_never_shares_stages_with_the_full_run():
    assert latent.parse_arguments(["--quick"]).runs != latent.parse_arguments([]).runs


def test_a_latent_model_trained_earlier_is_measured_beside_a_pixel_model_trained_now(tmp_path):
    from diffkit.export import export_bundle

    first = latent.main(["--quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results")])
    shipped = export_bundle(tmp_path / "runs" / "latent-bench-latent", tmp_path / "models" / "latent", command="x")
    arguments = ["--quick", "--latent-model", str(shipped), "--pixel-minutes", "0.1",
                 "--runs", str(tmp_path / "later"), "--out", str(tmp_path / "later-results")]
    report = latent.main(arguments)
    # the export records both trainings, so the budget it spent is known without the run directories
    for part in ("autoencoder", "latent"):
        assert (report[part]["steps"], report[part]["minutes"]) == (first[part]["steps"], first[part]["minutes"])
    assert report["autoencoder"]["psnr"] == pytest.approx(first["autoencoder"]["psnr"])
    assert not (tmp_path / "later" / "latent-bench-latent").exists() and not (tmp_path / "later" / "latent-ae").exists()
    planned = json.loads((tmp_path / "later" / "latent-bench-pixel" / "config.json").read_text())["train"]
    assert planned["max_minutes"] == pytest.approx(0.1)
