"""`diffkit train-autoencoder`: a preset + overrides -> `diffkit.train_autoencoder` -> an autoencoder run directory."""

from __future__ import annotations

import argparse

from diffkit.cli.train import add_run_arguments, checked_config, start_or_resume

EXAMPLE = "glyphs128-ae"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit train-autoencoder`."""
    parser = subparsers.add_parser(
        "train-autoencoder", help="train the KL autoencoder of a latent diffusion model (or continue one)",
        description="Train a KL autoencoder from a preset (e.g. glyphs128-ae) or a TOML file with dotted overrides; "
                    "writes runs/NAME/ with config.json, model.safetensors, state.ckpt, metrics.csv, samples/ "
                    "(originals beside reconstructions) and, once training finishes, latent_scale.json. Ctrl-C or "
                    "SIGTERM saves and exits; --resume continues exactly. One process at a time trains in a run "
                    "directory.",
    )
    add_run_arguments(parser, EXAMPLE)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the flags and the run directory, resolve the config, then train (one process)."""
    from diffkit.autoencoder_config import load_autoencoder_config

    config = checked_config(args, load_autoencoder_config, EXAMPLE)
    from diffkit.train import Launch  # Lightning is slow to import: only once the checks above pass
    from diffkit.train_autoencoder import train_autoencoder

    return start_or_resume(args, config, train_autoencoder, Launch(accelerator=args.accelerator))
