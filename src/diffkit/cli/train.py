"""`diffkit train`: a preset + overrides -> `diffkit.train.train` -> a run directory (or continue one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffkit.errors import DiffkitError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit train`."""
    parser = subparsers.add_parser(
        "train", help="train a diffusion model from a TOML preset (or continue a run)",
        description="Train from a preset in configs/ with dotted overrides (train.lr=2e-4); writes runs/NAME/ "
                    "with config.json, model.safetensors, state.ckpt, metrics.csv and samples/. Ctrl-C or SIGTERM "
                    "saves and exits; --resume continues exactly.",
    )
    parser.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. train.lr=2e-4 model.base_channels=32")
    parser.add_argument("--config", help="a preset (configs/glyphs32.toml, or just glyphs32) or a config.json")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its state.ckpt")
    parser.add_argument("--run-dir", metavar="DIR", help="where to write the run (default runs/<preset name>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes (train.max_minutes)")
    parser.add_argument("--devices", type=int, default=1, help="processes (devices) per node (default 1)")
    parser.add_argument("--num-nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "mps", "auto"),
                        help="hardware to train on (default auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then train."""
    from diffkit.config import load_config
    from diffkit.train import Launch, train

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    if args.devices < 1 or args.num_nodes < 1:
        raise DiffkitError("--devices and --num-nodes must be at least 1.")
    launch = Launch(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes)
    if args.resume:
        if args.config or args.run_dir:
            raise DiffkitError("--resume continues a run with its own config.json; drop --config and --run-dir.")
        config = load_config(Path(args.resume) / "config.json", overrides)
        train(config, args.resume, resume=True, launch=launch)
        return 0
    if not args.config:
        raise DiffkitError("Pass --config PRESET (e.g. --config configs/glyphs32.toml) or --resume RUN.")
    config = load_config(args.config, overrides)
    train(config, args.run_dir, launch=launch, name=Path(args.config).stem)
    return 0
