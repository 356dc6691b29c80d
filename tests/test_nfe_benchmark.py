"""benchmarks/nfe.py (issue 14): its NFE accounting, and the shape of its report on a tiny random bundle (seconds);
the "fitted" spacing that it and `diffkit sample|eval --spacing fitted` share."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from diffkit.bundle import load, save_bundle
from diffkit.cli import main
from diffkit.errors import DiffkitError
from tiny_run import one_thread, random_network, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nfe  # noqa: E402  (a benchmark script, importable once its folder is on the path)

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Reference statistics and datasets go to a fresh data directory per test."""
    monkeypatch.setenv("DIFFKIT_DATA", str(tmp_path / "data"))


def test_the_sweep_counts_network_evaluations_not_steps():
    rows = {(row.sampler, row.budget): row for row in nfe.plan([5, 10, 20, 50], spacings=["trailing"])}
    # Heun: 2 evaluations per step but 1 on the last (an Euler step to sigma = 0), so the most steps within budget.
    assert [(rows["heun", budget].steps, rows["heun", budget].evaluations) for budget in (5, 10, 20, 50)] == [
        (3, 5), (5, 9), (10, 19), (25, 49)]
    for sampler in ("ddim", "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "euler"):  # one evaluation per step
        assert all(rows[sampler, budget].steps == rows[sampler, budget].evaluations == budget
                   for budget in (5, 10, 20, 50))
    assert nfe.ddpm_setting(1000) == ("ddpm", "trailing", 1000, 1000, 1000)
    # samplers x grids x budgets, but no fitted grid for the stochastic dpmpp_2m_sde (grids fit an ODE's error)
    assert len(nfe.plan([5, 10, 20, 50])) == 6 * 4 * 4 - 4
    assert not [row for row in nfe.plan([10]) if row.sampler == "dpmpp_2m_sde" and row.spacing == "fitted"]


def test_report_json_and_table_on_a_tiny_random_bundle(tmp_path, capsys):
    config = tiny_config()
    save_bundle(tmp_path / "run", config, random_network(config))
    before = (tmp_path / "run" / "config.json").read_text()
    report = nfe.main(["--run", str(tmp_path / "run"), "--quick", "--n", "6", "--nfes", "3", "--samplers",
                       "dpmpp_2m,heun", "--spacings", "trailing,fitted", "--ddpm-steps", "10", "--classifier-steps",
                       "3", "--threads", "1", "--out", str(tmp_path / "results")])
    written = json.loads((tmp_path / "results" / "nfe-run-quick.json").read_text())
    assert written["summary"] == report["summary"] and written["samples"] == 6
    assert sorted(written["fitted_now"]) == ["dpmpp_2m/3", "heun/2"]  # fitted for the sweep, in memory only
    assert (tmp_path / "run" / "config.json").read_text() == before
    assert written["ddpm"]["evaluations"] == 10 and written["ddpm"]["domain_ratio"] == 1.0
    assert [(row["sampler"], row["spacing"], row["steps"], row["evaluations"]) for row in written["rows"]] == [
        ("dpmpp_2m", "trailing", 3, 3), ("dpmpp_2m", "fitted", 3, 3), ("heun", "trailing", 2, 3),
        ("heun", "fitted", 2, 3)]
    for row in written["rows"]:
        assert row["domain_ratio"] == pytest.approx(row["domain_fid"] / written["ddpm"]["domain_fid"])
    assert set(written["floor"]) == {"domain"} and written["estimate"]["image_evaluations"] == 6 * (10 + 4 * 3)
    table = (tmp_path / "results" / "nfe-run-quick.md").read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and "---" not in line]
    assert rows[0] == "| sampler | grid | 3 NFE |" and len(rows) == 5
    assert table[-1].startswith("best at 3 NFE: ") and "to DDPM-10" in table[-1]
    assert "estimated sampling time" in capsys.readouterr().out


def test_a_rerun_reuses_the_ddpm_reference_of_the_same_protocol_only(tmp_path):
    config = tiny_config()
    save_bundle(tmp_path / "run", config, random_network(config))
    common = ["--run", str(tmp_path / "run"), "--quick", "--n", "4", "--nfes", "3", "--spacings", "trailing",
              "--ddpm-steps", "10", "--classifier-steps", "3", "--threads", "1"]
    first = nfe.main([*common, "--samplers", "dpmpp_2m", "--out", str(tmp_path / "first")])
    reference = tmp_path / "first" / "nfe-run-quick.json"
    second = nfe.main([*common, "--samplers", "dpmpp_2m_sde", "--ddpm-from", str(reference),
                       "--out", str(tmp_path / "second")])  # the classifier the first run saved in RUN
    assert second["ddpm"]["domain_fid"] == first["ddpm"]["domain_fid"] and second["ddpm"]["from"] == str(reference)
    assert second["estimate"]["image_evaluations"] == 4 * 3  # the sweep's row only, no DDPM
    assert [row["sampler"] for row in second["rows"]] == ["dpmpp_2m_sde"]
    assert "(measured by " in (tmp_path / "second" / "nfe-run-quick.md").read_text()
    with pytest.raises(SystemExit, match="samples differ"):
        nfe.main([*common[:4], "5", *common[5:], "--samplers", "dpmpp_2m", "--ddpm-from", str(reference),
                  "--out", str(tmp_path / "third")])


def test_the_fitted_spacing_insists_on_the_stored_grid_for_sampling_and_eval(tmp_path, capsys):
    config = tiny_config("sample.sampler=ddim", "sample.steps=3")
    config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, grids={"ddim/3": [0, 40.5, 99]}))
    save_bundle(tmp_path / "run", config, random_network(config))
    bundle = load(tmp_path / "run")
    assert bundle.settings("ddim", 3, "fitted") == ("ddim", 3, "fitted", [0, 40.5, 99])
    assert [step.t for step in bundle.sample_steps(2, spacing="fitted")] == [99.0, 40.5, 0.0, -1]
    with pytest.raises(DiffkitError, match="no grid fitted for ddim with 4 steps.*fit-grid RUN --sampler ddim"):
        bundle.settings("ddim", 4, "fitted")
    with pytest.raises(DiffkitError, match="Fitted grids are for sampling"):
        bundle.img2img_steps(bundle.sample(1, steps=2), 0.5, steps=3, spacing="fitted")
    out = tmp_path / "eval.json"
    assert main(["eval", str(tmp_path / "run"), "--metrics", "memorisation", "--n", "4", "--sampler", "ddim",
                 "--steps", "3", "--spacing", "fitted", "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["spacing"] == "fitted" and record["timesteps"] == [0, 40.5, 99]
    assert main(["eval", str(tmp_path / "run"), "--metrics", "memorisation", "--n", "4", "--steps", "5",
                 "--spacing", "fitted", "--out", str(out), "--quiet"]) == 2
    assert "no grid fitted for dpmpp_2m with 5 steps" in capsys.readouterr().err
