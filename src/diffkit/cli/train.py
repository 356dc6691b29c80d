"""`diffkit train`: a preset + overrides -> `diffkit.train.train` -> a run directory (or continue one)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from diffkit.errors import DiffkitError


def add_run_arguments(parser: argparse.ArgumentParser, example: str) -> None:
    """The arguments every training command shares: overrides, --config/--resume/--run-dir, budgets, accelerator."""
    parser.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. train.lr=2e-4 model.base_channels=32")
    parser.add_argument("--config", help=f"a preset ({example}, or just its name) or a config.json")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its state.ckpt")
    parser.add_argument("--run-dir", metavar="DIR", help="where to write the run (default runs/<preset name>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes (train.max_minutes)")
    parser.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "mps", "auto"),
                        help="hardware to train on (default auto)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit train`."""
    parser = subparsers.add_parser(
        "train", help="train a diffusion model from a TOML preset (or continue a run)",
        description="Train from a preset in configs/ with dotted overrides (train.lr=2e-4); writes runs/NAME/ "
                    "with config.json, model.safetensors, state.ckpt, metrics.csv and samples/. Ctrl-C or SIGTERM "
                    "saves and exits; --resume continues exactly.",
    )
    add_run_arguments(parser, "configs/glyphs32.toml")
    parser.add_argument("--devices", type=int, default=1, help="processes (devices) per node (default 1)")
    parser.add_argument("--num-nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.set_defaults(func=run)


def start_or_resume(args: argparse.Namespace, load: Callable, train_function: Callable, launch, example: str) -> int:
    """Load the preset (or the resumed run's config.json) with the overrides and budgets, then train."""
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    if args.resume:
        if args.config or args.run_dir:
            raise DiffkitError("--resume continues a run with its own config.json; drop --config and --run-dir.")
        train_function(load(Path(args.resume) / "config.json", overrides), args.resume, resume=True, launch=launch)
        return 0
    if not args.config:
        raise DiffkitError(f"Pass --config PRESET (e.g. --config {example}) or --resume RUN.")
    train_function(load(args.config, overrides), args.run_dir, launch=launch, name=Path(args.config).stem)
    return 0


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then train."""
    from diffkit.config import load_config
    from diffkit.train import Launch, train

    if args.devices < 1 or args.num_nodes < 1:
        raise DiffkitError("--devices and --num-nodes must be at least 1.")
    launch = Launch(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes)
    return start_or_resume(args, load_config, train, launch, "configs/glyphs32.toml")
