"""`diffkit train`: a preset + overrides -> `diffkit.train.train` -> a run directory (or continue one)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from diffkit.errors import DiffkitError


class OverridesAnywhereParser(argparse.ArgumentParser):
    """Takes `section.key=value` words anywhere on the line, also after options (argparse alone takes a
    positional list only before the first option)."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, rest = super().parse_known_args(args, namespace)
        overrides = [word for word in rest if "=" in word and not word.startswith("-")]
        namespace.overrides = [*namespace.overrides, *overrides]
        return namespace, [word for word in rest if word not in overrides]


def add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The arguments every training command shares: overrides, --config/--resume/--run-dir, budgets, accelerator,
    --quiet."""
    parser.__class__ = OverridesAnywhereParser  # subparsers build plain ArgumentParsers
    parser.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. train.lr=2e-4 model.base_channels=32")
    parser.add_argument("--config", help=f"a preset shipped with diffkit (e.g. {example}) or a TOML / config.json file")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its state.ckpt")
    parser.add_argument("--run-dir", metavar="DIR", help="where to write the run (default runs/<preset name>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float,
                        help="stop after this many minutes (train.max_minutes); the learning-rate schedule is "
                             "planned to end with them; with --resume: this many more minutes. A fresh run starts "
                             "from the preset's recipe for that budget (its [recipes] table), if it has one")
    parser.add_argument("--no-recipe", action="store_true",
                        help="with --max-minutes: train the preset as written, without its budget recipe")
    parser.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "mps", "auto"),
                        help="hardware to train on (default auto)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar or status lines (the bar is off anyway when stderr is not a terminal)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit train`."""
    parser = subparsers.add_parser(
        "train", help="train a diffusion model from a TOML preset (or continue a run)",
        description="Train from a preset (e.g. glyphs32; an unknown name lists them) or a TOML file with dotted "
                    "overrides (train.lr=2e-4) anywhere on the line; writes runs/NAME/ with config.json, "
                    "model.safetensors, state.ckpt, metrics.csv and samples/. Ctrl-C or SIGTERM saves and exits; --resume continues "
                    "exactly. One process at a time trains in a run directory.",
    )
    add_run_arguments(parser, "glyphs32")
    parser.add_argument("--devices", type=int, default=1, help="processes (devices) per node (default 1)")
    parser.add_argument("--num-nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.set_defaults(func=run)


def checked_config(args: argparse.Namespace, load: Callable, example: str):
    """Check the flags and the run directory (fast, before the slow imports), then load the preset (or the resumed
    run's config.json) with the overrides and budgets."""
    from diffkit.run_directory import CONFIG_FILE, check_resumable, check_unlocked

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        if not math.isfinite(args.max_minutes) or args.max_minutes <= 0:
            raise DiffkitError(f"--max-minutes must be a positive finite number, not {args.max_minutes}.")
        overrides.append(f"train.max_minutes={args.max_minutes}")
    if args.resume:
        if args.config or args.run_dir:
            raise DiffkitError("--resume continues a run with its own config.json; drop --config and --run-dir.")
        if args.no_recipe:
            raise DiffkitError("--no-recipe chooses how a fresh run starts; a resumed run keeps its config.json, "
                               "so drop --no-recipe.")
        check_unlocked(check_resumable(args.resume))
        return load(Path(args.resume) / CONFIG_FILE, overrides)
    if not args.config:
        raise DiffkitError(f"Pass --config PRESET (e.g. --config {example}) or --resume RUN.")
    if args.run_dir:
        check_unlocked(args.run_dir)
    return load(args.config, [*recipe_overrides(args, load), *overrides])


def recipe_overrides(args: argparse.Namespace, load: Callable) -> tuple[str, ...]:
    """The overrides of the config file's recipe for --max-minutes (printed), beneath the command line's; none
    without a budget in minutes, with --no-recipe, or when the file has no [recipes] table. A recipe that does not
    load on its own is the preset's fault, not the user's: say so rather than blame the command line."""
    from diffkit.recipes import budget_recipe, read_recipes

    if args.max_minutes is None or args.no_recipe:
        return ()
    recipe = budget_recipe(read_recipes(args.config), args.max_minutes)
    if recipe is None:
        return ()
    try:
        load(args.config, recipe.overrides)
    except DiffkitError as error:
        raise DiffkitError(f"{Path(args.config).stem}'s {recipe.minutes:g}-minute recipe does not apply: {error} "
                           f"Fix its [recipes] table, or pass --no-recipe.") from error
    if not args.quiet:
        print(recipe.describe(Path(args.config).stem), flush=True)
    return recipe.overrides


def start_or_resume(args: argparse.Namespace, config, train_function: Callable, launch) -> int:
    """Train the checked config: a fresh run (named after the preset) or, with --resume, the run it continues."""
    # --max-minutes on resume is a new budget from now (make demo's "another DEMO_MINUTES"); without it a resumed
    # run continues the checkpoint's budget and learning-rate plan.
    train_function(config, args.resume or args.run_dir, resume=bool(args.resume), launch=launch,
                   name=Path(args.config or args.resume).stem, quiet=args.quiet,
                   extend_budget=bool(args.resume) and args.max_minutes is not None)
    return 0


def run(args: argparse.Namespace) -> int:
    """Check the flags and the run directory (fast, before the slow imports), resolve the config, then train."""
    from diffkit.config import load_config

    if args.devices < 1 or args.num_nodes < 1:
        raise DiffkitError("--devices and --num-nodes must be at least 1.")
    config = checked_config(args, load_config, "glyphs32")
    from diffkit.train import Launch, train  # Lightning is slow to import: only once the checks above pass

    launch = Launch(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes)
    return start_or_resume(args, config, train, launch)
