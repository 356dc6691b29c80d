"""`diffkit train-autoencoder`: a preset + overrides -> `diffkit.train_autoencoder` -> an autoencoder run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffkit.errors import DiffkitError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit train-autoencoder`."""
    parser = subparsers.add_parser(
        "train-autoencoder", help="train the KL autoencoder of a latent diffusion model (or continue one)",
        description="Train a KL autoencoder from a preset (configs/glyphs128-ae.toml) with dotted overrides; writes "
                    "runs/NAME/ with config.json, model.safetensors, state.ckpt, metrics.csv, samples/ (originals "
                    "beside reconstructions) and, once training finishes, latent_scale.json. Ctrl-C or SIGTERM "
                    "saves and exits; --resume continues exactly.",
    )
    parser.add_argument("overrides", nargs="*", metavar="SECTION.KEY=VALUE",
                        help="config overrides, e.g. train.kl_weight=1e-5 model.latent_channels=4")
    parser.add_argument("--config", help="an autoencoder preset (configs/glyphs128-ae.toml) or a config.json")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its state.ckpt")
    parser.add_argument("--run-dir", metavar="DIR", help="where to write the run (default runs/<preset name>)")
    parser.add_argument("--max-steps", type=int, help="stop after this many training steps (train.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes (train.max_minutes)")
    parser.add_argument("--accelerator", default="auto", choices=("cpu", "gpu", "cuda", "mps", "auto"),
                        help="hardware to train on (default auto)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config, then train."""
    from diffkit.autoencoder_config import load_autoencoder_config
    from diffkit.train import Launch
    from diffkit.train_autoencoder import train_autoencoder

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    launch = Launch(accelerator=args.accelerator)
    if args.resume:
        if args.config or args.run_dir:
            raise DiffkitError("--resume continues a run with its own config.json; drop --config and --run-dir.")
        config = load_autoencoder_config(Path(args.resume) / "config.json", overrides)
        train_autoencoder(config, args.resume, resume=True, launch=launch)
        return 0
    if not args.config:
        raise DiffkitError("Pass --config PRESET (e.g. --config configs/glyphs128-ae.toml) or --resume RUN.")
    config = load_autoencoder_config(args.config, overrides)
    train_autoencoder(config, args.run_dir, launch=launch, name=Path(args.config).stem)
    return 0
