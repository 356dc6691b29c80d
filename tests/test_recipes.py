"""Budget recipes (`diffkit.recipes`): a preset's [recipes] table, the recipe a budget gets, and `diffkit train`
applying it beneath the command line's overrides on a fresh run only."""

import json

import pytest

from diffkit.cli import main
from diffkit.config import load_config, read_config_file
from diffkit.errors import DiffkitError
from diffkit.recipes import Recipe, budget_recipe, read_recipes

from tiny_run import one_thread, write_tiny_toml

single_thread = pytest.fixture(autouse=True)(one_thread)

RECIPES = '''
[recipes]
10 = ["train.lr=3e-3", "train.warmup_steps=7"]
"2.5" = ["train.lr=4e-3"]
120 = ["train.lr=5e-4", "train.ema_decay=0.9999"]
'''


def recipe_toml(tmp_path, table: str = RECIPES):
    """The tiny preset with a [recipes] table appended."""
    path = write_tiny_toml(tmp_path)
    path.write_text(path.read_text() + table)
    return path


def plain_toml(tmp_path):
    """The tiny preset without recipes, in a folder of its own."""
    (tmp_path / "plain").mkdir(exist_ok=True)
    return write_tiny_toml(tmp_path / "plain")


def test_a_budget_gets_the_largest_recipe_at_or_below_it_else_the_smallest(tmp_path):
    recipes = read_recipes(recipe_toml(tmp_path))
    assert [recipe.minutes for recipe in recipes] == [2.5, 10.0, 120.0]
    chosen = {minutes: budget_recipe(recipes, minutes).minutes for minutes in (1, 2.5, 9.9, 10, 60, 120, 600)}
    assert chosen == {1: 2.5, 2.5: 2.5, 9.9: 2.5, 10: 10.0, 60: 10.0, 120: 120.0, 600: 120.0}
    assert budget_recipe(recipes, 10) == Recipe(10.0, ("train.lr=3e-3", "train.warmup_steps=7"))
    assert budget_recipe(read_recipes(plain_toml(tmp_path)), 10) is None


def test_the_recipes_table_is_not_part_of_the_config(tmp_path):
    path = recipe_toml(tmp_path)
    assert "recipes" not in read_config_file(path)
    assert load_config(path).train.lr == load_config(plain_toml(tmp_path)).train.lr
    assert budget_recipe(read_recipes("glyphs32"), 10).overrides[-1] == "diffusion.prediction=v"  # make demo's


def test_fashion28s_recipe_is_the_measured_30_minute_one_and_loads():
    for minutes in (10, 30, 60):  # the 30-minute recipe is the only one, so every budget starts from it
        recipe = budget_recipe(read_recipes("fashion28"), minutes)
        assert recipe.minutes == 30
    config = load_config("fashion28", overrides=list(recipe.overrides))
    assert (config.diffusion.prediction, config.train.lr, config.train.warmup_steps, config.model.dropout) == (
        "v", 1e-3, 100, 0.0)


@pytest.mark.parametrize("table, words", [
    ('\n[[recipes]]\nminutes = 10\n', "must be a table of minutes"),
    ('\n[recipes]\nten = ["train.lr=1e-3"]\n', "'ten'"),
    ('\n[recipes]\n0 = ["train.lr=1e-3"]\n', "a positive number"),
    ('\n[recipes]\n2.5 = ["train.lr=1e-3"]\n', "quote fractional minutes"),
    ('\n[recipes]\n10 = "train.lr=1e-3"\n', "list of \"section.key=value\" strings"),
    ('\n[recipes]\n10 = ["train.lr"]\n', "list of \"section.key=value\" strings"),
])
def test_a_malformed_recipe_is_one_sentence(tmp_path, table, words):
    with pytest.raises(DiffkitError, match=words.replace("(", r"\(")):
        read_recipes(recipe_toml(tmp_path, table))


def trained_config(run_dir, capsys, *arguments: str) -> tuple[dict, str]:
    """Train one step with the CLI; the saved config.json and what was printed."""
    assert main(["train", *arguments, "--run-dir", str(run_dir), "--max-steps", "1", "train.sample_every=0",
                 "--accelerator", "cpu"]) == 0
    return json.loads((run_dir / "config.json").read_text()), capsys.readouterr().out


def test_train_applies_the_budgets_recipe_beneath_the_command_line_and_prints_it(tmp_path, capsys):
    preset = str(recipe_toml(tmp_path))
    config, printed = trained_config(tmp_path / "a", capsys, "--config", preset, "--max-minutes", "30")
    assert (config["train"]["lr"], config["train"]["warmup_steps"]) == (3e-3, 7)
    assert "tiny's 10-minute recipe: train.lr=3e-3 train.warmup_steps=7" in printed
    config, _ = trained_config(tmp_path / "b", capsys, "--config", preset, "--max-minutes", "30", "train.lr=1e-4")
    assert (config["train"]["lr"], config["train"]["warmup_steps"]) == (1e-4, 7)  # the user's override wins
    plain = load_config(preset).train
    config, printed = trained_config(tmp_path / "c", capsys, "--config", preset, "--max-minutes", "30", "--no-recipe")
    assert (config["train"]["lr"], config["train"]["warmup_steps"]) == (plain.lr, plain.warmup_steps)
    assert "recipe" not in printed
    config, printed = trained_config(tmp_path / "d", capsys, "--config", preset)  # no budget in minutes: no recipe
    assert config["train"]["lr"] == plain.lr and "recipe" not in printed


def test_a_resumed_run_keeps_its_config_and_gets_no_recipe(tmp_path, capsys):
    preset = str(recipe_toml(tmp_path))
    trained_config(tmp_path / "run", capsys, "--config", preset, "--max-minutes", "5", "--no-recipe")
    assert main(["train", "--resume", str(tmp_path / "run"), "--max-minutes", "200", "--max-steps", "2",
                 "--accelerator", "cpu"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["lr"] == load_config(preset).train.lr and "recipe" not in capsys.readouterr().out


def test_no_recipe_on_a_resumed_run_is_one_sentence(tmp_path, capsys):
    preset = str(recipe_toml(tmp_path))
    trained_config(tmp_path / "run", capsys, "--config", preset, "--max-minutes", "5", "--no-recipe")
    assert main(["train", "--resume", str(tmp_path / "run"), "--max-minutes", "5", "--no-recipe",
                 "--accelerator", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == ("diffkit: error: --no-recipe chooses how a fresh run starts; a resumed "
                                               "run keeps its config.json, so drop --no-recipe.")


def test_a_recipe_that_does_not_load_blames_the_preset_and_trains_nothing(tmp_path, capsys):
    preset = str(recipe_toml(tmp_path, '\n[recipes]\n10 = ["train.no_such_key=1"]\n'))
    assert main(["train", "--config", preset, "--max-minutes", "10", "--run-dir", str(tmp_path / "run"),
                 "--accelerator", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("diffkit: error: tiny's 10-minute recipe does not apply: ") and error.count("\n") == 1
    assert "no_such_key" in error and error.rstrip().endswith("Fix its [recipes] table, or pass --no-recipe.")
    assert not (tmp_path / "run").exists()
