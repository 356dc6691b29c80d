"""Budget recipes: a preset's overrides for a training budget in minutes (issue 12), from its `[recipes]` table.

A preset is sized for long runs; a short budget trains best with other choices (measured: `make demo`'s ten minutes
on glyphs32 gave 64/64 glyph-like samples predicting v against 14/64 with eps). So a preset may say, per budget in
minutes, which overrides to start from:

    [recipes]
    10 = ["model.num_res_blocks=1", "train.lr=1e-3", "train.warmup_steps=100", "diffusion.prediction=v"]
    "2.5" = [...]    # fractional minutes are quoted (unquoted, TOML reads 2.5 as a dotted key)

`diffkit train --config PRESET --max-minutes M` applies the recipe of the largest budget <= M (else the smallest),
beneath the command line's own overrides, and prints it; `--no-recipe` trains the preset as written. A resumed run
keeps its config.json. The table is not part of the config (`config.read_config_file` leaves it out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from diffkit.config import RECIPES, read_config_tables
from diffkit.errors import DiffkitError


@dataclass(frozen=True)
class Recipe:
    """The overrides a preset recommends for a budget of `minutes`."""

    minutes: float
    overrides: tuple[str, ...]

    def describe(self, preset: str) -> str:
        """One line for the start of training: which recipe, and how to train without it."""
        return (f"diffkit: {preset}'s {self.minutes:g}-minute recipe: {' '.join(self.overrides)} "
                f"(the command line's overrides win; --no-recipe: the preset as written)")


def read_recipes(path: str | Path) -> list[Recipe]:
    """A config file's recipes sorted by budget (none without a `[recipes]` table); a malformed one is a
    DiffkitError naming the entry."""
    tables = read_config_tables(path)
    table = tables.get(RECIPES, {})
    if not isinstance(table, dict):
        raise DiffkitError(f"[{RECIPES}] in {path} must be a table of minutes = [overrides], not {table!r}.")
    recipes = []
    for key, overrides in table.items():
        try:
            minutes = float(key)
        except ValueError:
            minutes = math.nan
        if not math.isfinite(minutes) or minutes <= 0:
            raise DiffkitError(f"The recipe key {key!r} in {path} must be a budget in minutes (a positive number).")
        if isinstance(overrides, dict):  # TOML reads an unquoted 2.5 = [...] as the dotted key 2 -> 5
            raise DiffkitError(f"The recipe key {key!r} in {path} holds a table; quote fractional minutes "
                               f"(\"2.5\" = [...]).")
        if not isinstance(overrides, list) or not all(isinstance(word, str) and "=" in word for word in overrides):
            raise DiffkitError(f"The {key}-minute recipe in {path} must be a list of \"section.key=value\" strings.")
        recipes.append(Recipe(minutes, tuple(overrides)))
    return sorted(recipes, key=lambda recipe: recipe.minutes)


def budget_recipe(recipes: list[Recipe], minutes: float) -> Recipe | None:
    """The recipe for a budget of `minutes`: the largest budget <= minutes, else the smallest (None: no recipes).

    The largest below rather than the nearest: a recipe for a longer budget (longer warm-up, bigger network) may not
    get through its warm-up in a shorter one."""
    if not recipes:
        return None
    fitting = [recipe for recipe in recipes if recipe.minutes <= minutes]
    return fitting[-1] if fitting else recipes[0]
