"""benchmarks/budget.py (issue 12): the diffusers recipe is the issue's, its loop runs and samples, and the report's
table and verdicts come out of fabricated rows (seconds)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from tiny_run import one_thread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import budget  # noqa: E402  (a benchmark script, importable once its folder is on the path)

single_thread = pytest.fixture(autouse=True)(one_thread)


def test_the_diffusers_recipe_is_the_one_of_the_issue():
    from diffusers import DDPMScheduler, UNet2DModel

    network = UNet2DModel(**budget.diffusers_unet_config(28))
    config = network.config
    assert tuple(config.block_out_channels) == (32, 64, 64) and config.layers_per_block == 1
    assert (config.in_channels, config.out_channels, config.sample_size) == (1, 1, 28)
    # attention at the middle level only, down and up
    assert [("Attn" in kind) for kind in config.down_block_types] == [False, True, False]
    assert [("Attn" in kind) for kind in config.up_block_types] == [False, True, False]
    schedule = DDPMScheduler(**budget.NOISE_SCHEDULE).config
    assert (schedule.num_train_timesteps, schedule.beta_schedule, schedule.prediction_type) == (1000, "linear",
                                                                                                "epsilon")
    assert budget.OPTIMIZER == {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8}
    assert budget.EMA == {"decay": 0.9999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 0.75}
    assert budget.WARMUP_STEPS == 500 and budget.FULL["diffusers_batch"] == 64
    assert budget.FULL["n"] == budget.FULL["reference_n"] == 2000 and budget.FULL["steps"] == 20


def test_make_demo_and_the_benchmark_train_glyphs32_with_its_10_minute_recipe():
    from diffkit.recipes import budget_recipe, read_recipes

    recipe = budget_recipe(read_recipes("glyphs32"), 10)
    line = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("DEMO_OVERRIDES"))
    demo_keys = {word.split("=")[0] for word in line.split("?=")[1].split()}
    assert demo_keys.isdisjoint(word.split("=")[0] for word in recipe.overrides)  # the demo's line never undoes it
    assert "--no-recipe" not in (ROOT / "Makefile").read_text()
    args = budget.parse_arguments(["--dataset", "glyphs", "--no-recipe", "--diffkit-set", "train.lr=2e-3"])
    assert budget.variant(args) == ["--no-recipe", "train.lr=2e-3"]
    assert budget.variant(budget.parse_arguments(["--dataset", "glyphs"])) == []


def test_the_horizon_is_the_steps_the_remaining_budget_buys():
    assert budget.horizon_for(12, elapsed=6.0, budget=600.0, seconds_per_step=0.5) == 12 + 1188
    assert budget.horizon_for(12, elapsed=600.0, budget=600.0, seconds_per_step=0.5) == 13  # never before now


def test_the_diffusers_loop_trains_saves_and_samples(tmp_path):
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    result = budget.train_diffusers(images, minutes=0.02, batch_size=4, directory=tmp_path)
    assert result["steps"] >= 1 and result["batch_size"] == 4 and result["parameters"] > 0
    samples = budget.sample_diffusers(tmp_path, n=3, steps=2, seed=0, batch_size=2)
    assert samples.shape == (3, 1, 8, 8) and samples.dtype == torch.uint8


def test_a_saved_classifier_of_the_same_data_and_steps_is_reused_not_retrained(tmp_path, monkeypatch):
    import argparse

    import quality
    from diffkit.config import DataConfig
    from diffkit.evaluate.classifier import ClassifierConfig, DomainClassifier

    trained = []

    def training(data, *, steps, width, seed):  # stands in for 2,000 steps on Fashion-MNIST
        trained.append((data.size, steps))
        model = DomainClassifier(ClassifierConfig(in_channels=1, num_classes=3, width=4))
        return model, {"dataset": data.dataset, "size": 8, "steps": steps, "width": width, "seed": seed}

    monkeypatch.setattr(quality, "train_dataset_classifier", training)
    args = argparse.Namespace(classifier=None, classifier_steps=5)
    data = DataConfig(dataset="fashion_mnist", options={"channels": 1})
    _, first = quality.get_classifier(args, data, tmp_path)
    _, again = quality.get_classifier(args, data, tmp_path)
    assert trained == [(None, 5)] and again["sha256"] == first["sha256"] and again["path"].endswith("domain-classifier")
    quality.get_classifier(argparse.Namespace(classifier=None, classifier_steps=6), data, tmp_path)
    quality.get_classifier(args, DataConfig(dataset="fashion_mnist", size=14), tmp_path)
    assert trained == [(None, 5), (None, 6), (14, 5)]  # other steps or other data: trained again
    given_args = argparse.Namespace(classifier=str(tmp_path / "domain-classifier"))
    _, given = quality.get_classifier(given_args, data, tmp_path)
    assert len(trained) == 3 and len(given["sha256"]) == 64


def fabricated_report() -> dict:
    def row(recipe, minutes, fid, steps):
        return {"recipe": recipe, "minutes": minutes, "steps": steps, "batch_size": 128 if recipe == "diffkit" else 64,
                "parameters": 1_500_000, "inception_fid": fid, "domain_fid": fid / 100, "precision": 0.6,
                "recall": 0.5, "variant": ["train.lr=1e-3"] if recipe == "diffkit" else []}

    return {"dataset": "fashion", "preset": "fashion28", "date": "2026-12-03", "machine": "x86_64 test CPU, 2 cores",
            "protocol": {"steps": 20, "samples": 2000, "pr_features": "Inception"},
            "reference": {"split": "test", "count": 2000},
            "floor": {"inception_fid": 12.4, "domain_fid": 0.05, "precision": 0.75, "recall": 0.76},
            "rows": [row("diffkit", 10.0, 40.0, 600), row("diffusers", 10.0, 80.0, 2400),
                     row("diffkit", 30.0, 30.0, 1800), {"recipe": "diffusers", "minutes": 30.0, "error": "status 1"}]}


def test_table_and_verdicts_from_fabricated_rows(tmp_path):
    report = fabricated_report()
    table = budget.markdown(report).splitlines()
    assert "2026-12-03" in table[0] and "test CPU" in table[0]
    assert table[2].startswith("| recipe | minutes | steps x batch | params | Inception FID | domain FID")
    assert table[4] == ("| diffkit (train.lr=1e-3) | 10 | 600 x 128 | 1.50M | 40.00 | 0.400 | 0.600 / 0.500 | - "
                        "| 12.40 / 0.050 / 0.750 / 0.760 / - |")
    assert table[5].startswith("| diffusers | 10 | 2,400 x 64 |")
    assert "failed: status 1" in table[7]
    assert "- 10 min: diffkit FID / diffusers FID = 0.50" in table
    assert "- at 30 min diffkit FID 30.00 <= 3 x floor 37.20: yes" in table
    assert not any("30 min: diffkit FID / diffusers" in line for line in table)  # its diffusers row failed
    budget.write_report(report, tmp_path / "budget-fashion")
    assert json.loads((tmp_path / "budget-fashion.json").read_text())["rows"][0]["steps"] == 600


def test_rows_kept_from_another_processor_are_named_with_it():
    report = fabricated_report()
    report["rows"][0]["machine"], report["rows"][0]["date"] = "x86_64 other CPU, 2 cores", "2026-12-01"
    report["rows"][2]["note"] = "measured as a variant"
    table = budget.markdown(report).splitlines()
    assert "- diffkit (train.lr=1e-3) 30 min: measured as a variant" in table
    assert "- rows of 2026-12-01, x86_64 other CPU, 2 cores: diffkit 10 min" in table
    assert "- rows of 2026-12-03, x86_64 test CPU, 2 cores: diffusers 10 min, diffkit 30 min, diffusers 30 min" in table
    assert "- 10 min: diffkit FID / diffusers FID = 0.50 (the two rows ran on different processors)" in table
    assert not any(line.startswith("- rows of") for line in budget.markdown(fabricated_report()).splitlines())


def test_an_interrupted_run_keeps_its_rows_under_the_same_protocol(tmp_path):
    args = budget.parse_arguments(["--quick", "--out", str(tmp_path)])
    report = budget.new_report(args, budget.DATASETS["fashion"])
    kept = {**report, "rows": [{"recipe": "diffkit", "minutes": 0.1, "steps": 3}, {"recipe": "diffusers",
                                                                                    "minutes": 0.1, "error": "x"}]}
    budget.write_report(kept, tmp_path / "budget-fashion-quick")
    stamp = {"date": report["date"], "machine": report["machine"]}
    kept_rows = budget.previous_rows(tmp_path / "budget-fashion-quick", report, fresh=False)
    assert kept_rows == [{**stamp, **kept["rows"][0]}]
    assert budget.previous_rows(tmp_path / "budget-fashion-quick", report, fresh=True) == []
    other = {**report, "protocol": {**report["protocol"], "steps": 5}}
    assert budget.previous_rows(tmp_path / "budget-fashion-quick", other, fresh=False) == []
    assert args.inception is False and args.minutes == [0.1] and re.search("quick", str(args.work))


def test_a_variant_can_train_diffkit_alone_and_kept_rows_are_not_trained_again():
    both = budget.parse_arguments(["--minutes", "10", "30"])
    assert budget.still_to_train(both, done={("diffusers", 10.0): {}}) == [
        (10.0, "diffkit"), (30.0, "diffkit"), (30.0, "diffusers")]
    alone = budget.parse_arguments(["--minutes", "10", "30", "--recipes", "diffkit", "--diffkit-set", "train.lr=1e-3"])
    assert budget.still_to_train(alone, done={}) == [(10.0, "diffkit"), (30.0, "diffkit")]


def test_a_glyph_table_without_feature_extractors():
    report = {**fabricated_report(), "dataset": "glyphs", "preset": "glyphs32",
              "protocol": {"steps": 4, "samples": 16, "pr_features": None}, "floor": {"glyph_like": 0.966},
              "rows": [{"recipe": "diffkit", "minutes": 10.0, "steps": 700, "batch_size": 64, "parameters": 1e6,
                        "glyph_like": 0.9}]}
    table = budget.markdown(report).splitlines()
    assert "precision/recall" not in table[0]
    assert table[4] == "| diffkit | 10 | 700 x 64 | 1.00M | - | - | - | 0.900 | - / - / - / 0.966 |"
    assert table[-1] == ""  # no FID, so no verdicts
