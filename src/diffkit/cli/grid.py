"""`diffkit fit-grid`: a run's training data -> its PCA spectrum -> fitted sampling grids stored in its config.json."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit fit-grid`."""
    parser = subparsers.add_parser(
        "fit-grid", help="fit a data-aware timestep grid for a sampler and step count to a run's data",
        description="Fit the timesteps at which SAMPLER with STEPS steps keeps every scale of RUN's training data "
                    "(a Gaussian model of it: its PCA spectrum), and store them in RUN/config.json, so that "
                    "`diffkit sample` uses them for that sampler and step count unless --spacing is given.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory or bundle (its config.json names the data)")
    parser.add_argument("--sampler", default="dpmpp_2m", help="a deterministic sampler (default dpmpp_2m)")
    parser.add_argument("--steps", default="10,20", help="comma-separated step counts (default 10,20)")
    parser.set_defaults(func=run)


def parse_steps(text: str) -> list[int]:
    """'10,20' -> [10, 20]; anything else is refused in one sentence."""
    from diffkit.errors import DiffkitError

    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        steps = []
    if not steps:
        raise DiffkitError(f"--steps must be comma-separated whole numbers such as 10,20, not '{text}'.")
    return steps


def run(args: argparse.Namespace) -> int:
    """Read the run's data, fit one grid per step count, report the worst std error and save the config."""
    import dataclasses

    import torch

    from diffkit.bundle import CONFIG_FILE, schedule_of
    from diffkit.config import load_config, save_config
    from diffkit.errors import DiffkitError
    from diffkit.grids import fit_grid, fit_scales, grid_key, spectrum_of, worst_std_error
    from diffkit.images import to_model_range
    from diffkit.sampling import get_sampler, sampling_schedule
    from diffkit.train_data import load_training_images

    steps_list = parse_steps(args.steps)
    get_sampler(args.sampler)
    config_path = Path(args.run) / CONFIG_FILE
    if not config_path.is_file():
        raise DiffkitError(f"{config_path} does not exist; pass a run directory or bundle with {CONFIG_FILE}.")
    config = load_config(config_path)
    schedule = schedule_of(config)
    images = load_training_images(config.data).images
    if config.latent.autoencoder is not None:  # a latent model's grid is fitted to its latents' spectrum
        from diffkit.bundle import load
        from diffkit.encoders import encode_dataset

        images = encode_dataset(load(args.run).encoder, images)
    else:
        images = to_model_range(images)
    scales = fit_scales(spectrum_of(images, torch.Generator().manual_seed(config.train.seed)), schedule)
    grids = dict(config.sample.grids)
    spacing = get_sampler(args.sampler).recommended_spacing
    for steps in steps_list:
        timesteps = fit_grid(args.sampler, steps, schedule, scales)
        grids[grid_key(args.sampler, steps)] = [round(float(t), 4) for t in timesteps]
        before = worst_std_error(args.sampler, schedule, sampling_schedule(schedule, steps, spacing), scales)
        after = worst_std_error(args.sampler, schedule, sampling_schedule(schedule, timesteps=timesteps), scales)
        print(f"{grid_key(args.sampler, steps)}: worst std error over the data's scales {scales.min():.3g}.."
              f"{scales.max():.3g}: {before:.1%} on the {spacing} grid, {after:.1%} on the fitted one")
    config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, grids=grids))
    print(f"wrote {save_config(config, config_path)}")
    return 0

