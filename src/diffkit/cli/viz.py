"""`diffkit viz schedules|forward|trajectory|map|toy2d|gaussian1d`: pictures that explain diffusion.

Each subcommand parses its options, makes the library calls in `diffkit.viz`, writes one picture (or a GIF) and
prints where it went and how long it took. A model comes from a run directory (`diffkit.load`), or, with
`--ideal`, is the exact denoiser of the dataset's own empirical distribution (a perfectly memorising model).
"""

from __future__ import annotations

import argparse
import inspect
import time

import torch

from diffkit.animation import ANIMATION_SUFFIXES
from diffkit.cli.arguments import add_quiet, add_spacing, finite_float, output_file
from diffkit.errors import DiffkitError

SAMPLER_HELP = "sampler name (ddpm, ddim, ...; default ddim)"


def add_parser(subparsers) -> None:
    """Register `diffkit viz` and its six pictures."""
    parser = subparsers.add_parser("viz", help="draw pictures that explain diffusion")
    pictures = parser.add_subparsers(dest="viz_command", metavar="PICTURE")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    schedules = _picture(pictures, "schedules", "sqrt(alpha_bar), 1 - alpha_bar and log-SNR of noise schedules",
                         run_schedules)
    schedules.add_argument("--schedules", default="linear,cosine,sigmoid", help="comma-separated schedule names")
    schedules.add_argument("--T", type=int, default=1000, help="diffusion steps (default 1000)")

    forward = _picture(pictures, "forward", "one image noised at evenly spaced t, one row per schedule",
                       run_forward)
    forward.add_argument("--image", metavar="FILE", help="a picture file (instead of --dataset)")
    forward.add_argument("--index", type=int, default=None, help="which dataset image (default: random)")
    forward.add_argument("--schedules", default="linear,cosine,sigmoid", help="comma-separated schedule names")
    forward.add_argument("--T", type=int, default=1000, help="diffusion steps (default 1000)")
    forward.add_argument("--columns", type=int, default=8, help="noise levels shown (default 8)")
    _add_dataset_options(forward, required=False)

    trajectory = _picture(pictures, "trajectory", "x_t and predicted x0 along sampling, plus a GIF",
                          run_trajectory)
    _add_model_options(trajectory)
    trajectory.add_argument("--samples", type=int, default=4, help="samples drawn (default 4)")
    trajectory.add_argument("--columns", type=int, default=8, help="steps shown in the strip (default 8)")
    trajectory.add_argument("--gif", metavar="PATH", type=output_file(ANIMATION_SUFFIXES),
                            help="also write the denoising as a .gif or .mp4")
    _add_dataset_options(trajectory, required=False)

    pixel_map = _picture(pictures, "map", "UMAP of dataset pixels with density, samples and trajectories",
                         run_map)
    _add_model_options(pixel_map, steps=15)  # a 32-px UNet made ~15 images/s here: keep it under a minute
    pixel_map.add_argument("--count", type=int, default=5000, help="dataset images on the map (default 5000)")
    pixel_map.add_argument("--samples", type=int, default=24, help="generated samples overlaid (default 24)")
    pixel_map.add_argument("--trajectories", type=int, default=6, help="sample paths drawn (default 6)")
    pixel_map.add_argument("--epochs", type=int, default=200, help="UMAP optimisation epochs (default 200)")
    pixel_map.add_argument("--space", choices=("pixel", "latent"), default="pixel",
                           help="latent: a latent model's map of the dataset's latents beside the pixel map "
                                "(default pixel)")
    _add_dataset_options(pixel_map, required=True)

    toy = _picture(pictures, "toy2d", "train a 2-D toy diffusion model in seconds and draw it", run_toy)
    toy.add_argument("--data", default="moons", help="moons, swiss_roll or gaussians (default moons)")
    toy.add_argument("--schedule", default="linear", help="noise schedule (default linear)")
    toy.add_argument("--T", type=int, default=1000, help="diffusion steps (default 1000)")
    toy.add_argument("--iterations", type=int, default=4000, help="training iterations (default 4000)")
    toy.add_argument("--points", type=int, default=2000, help="points sampled (default 2000)")
    toy.add_argument("--sampler", default="ddim", help=SAMPLER_HELP)
    toy.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    toy.add_argument("--score", action="store_true",
                     help="draw the learned score field as arrows at a few noise levels beside the exact one")
    add_quiet(toy)

    gaussian = _picture(pictures, "gaussian1d", "fit a 1-D normal by maximum likelihood", run_gaussian)
    gaussian.add_argument("--mean", type=finite_float, default=1.0, help="true mean (default 1)")
    gaussian.add_argument("--std", type=finite_float, default=0.5, help="true standard deviation (default 0.5)")
    gaussian.add_argument("--count", type=int, default=500, help="samples drawn (default 500)")


def _picture(pictures, name: str, about: str, func) -> argparse.ArgumentParser:
    """One picture subcommand with the options every picture shares (--out, --seed)."""
    parser = pictures.add_parser(name, help=about, description=about)
    parser.add_argument("--out", required=True, metavar="PATH", type=output_file(_figure_suffixes),
                        help="where to write the picture (.png, .pdf, .svg or .jpg)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: small batches on a shared CPU stall with more)")
    parser.set_defaults(func=lambda args: _on_threads(func, args))
    return parser


def _on_threads(func, args: argparse.Namespace) -> int:
    """Run a picture command with `--threads` torch threads, restoring the previous count afterwards.

    Measured on the shared 2-core machine under load: 16 samples x 15 DDIM steps of a 32-px UNet took 73 s on
    two threads and 1.9 s on one, because every parallel region waits for both threads to be scheduled.
    """
    if args.threads < 1:
        raise DiffkitError(f"--threads must be at least 1, not {args.threads}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return func(args)
    finally:
        torch.set_num_threads(previous)


def _add_dataset_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--dataset", required=required, help="dataset name (see `diffkit data list`)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the dataset's)")
    parser.add_argument("--data-dir", default=None, help="dataset cache directory")
    parser.add_argument("--path", default=None, help="folder dataset: the folder of pictures")


def _add_model_options(parser: argparse.ArgumentParser, steps: int | None = None) -> None:
    parser.add_argument("run", nargs="?", help="a run directory or model bundle (see `diffkit train`)")
    parser.add_argument("--ideal", action="store_true",
                        help="instead of a run: the exact denoiser of the dataset's images (memorises them)")
    parser.add_argument("--schedule", default="cosine", help="--ideal: noise schedule (default cosine)")
    parser.add_argument("--T", type=int, default=1000, help="--ideal: diffusion steps (default 1000)")
    parser.add_argument("--sampler", default="ddim", help=SAMPLER_HELP)
    default = f"{steps}" if steps else "the run's, or the sampler's recommended number"
    parser.add_argument("--steps", type=int, default=steps, help=f"sampling steps (default: {default})")
    add_spacing(parser)
    parser.add_argument("--label", type=int, default=None, help="class label for a conditional model")
    add_quiet(parser)


def _figure_suffixes() -> tuple[str, ...]:
    """The suffixes `save_figure` writes (asked only when --out is parsed: matplotlib is slow to import)."""
    from diffkit.viz.figures import FIGURE_SUFFIXES

    return FIGURE_SUFFIXES


def _generator(args: argparse.Namespace) -> torch.Generator:
    return torch.Generator().manual_seed(args.seed)


def _schedules(names: str, T: int) -> dict:
    from diffkit.schedule import make_schedule

    return {name.strip(): make_schedule(name.strip(), T) for name in names.split(",") if name.strip()}


def _dataset_images(args: argparse.Namespace):
    """The chosen dataset's images as float (N, C, H, W) in [-1, 1]."""
    from diffkit.data import load_dataset
    from diffkit.images import to_model_range

    options = {"path": args.path} if args.path else {}
    dataset = load_dataset(args.dataset, size=args.size, data_dir=args.data_dir, **options)
    return to_model_range(dataset.images)


def _written(path, start: float) -> int:
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s")
    return 0


def run_schedules(args: argparse.Namespace) -> int:
    """`diffkit viz schedules`."""
    from diffkit.viz import plot_schedules, save_figure

    start = time.perf_counter()
    return _written(save_figure(plot_schedules(_schedules(args.schedules, args.T)), args.out), start)


def run_forward(args: argparse.Namespace) -> int:
    """`diffkit viz forward`."""
    from diffkit.images import load_image
    from diffkit.viz import forward_strip, save_figure

    start = time.perf_counter()
    generator = _generator(args)
    if (args.image is None) == (args.dataset is None):
        raise DiffkitError("Choose the image with exactly one of --image FILE or --dataset NAME.")
    if args.image is not None:
        image = load_image(args.image, channels=3)
    else:
        images = _dataset_images(args)
        index = args.index if args.index is not None else int(torch.randint(0, len(images), (1,),
                                                                             generator=generator))
        if not 0 <= index < len(images):
            raise DiffkitError(f"--index {index} is outside the dataset's {len(images)} images.")
        image = images[index]
    figure = forward_strip(image, _schedules(args.schedules, args.T), args.columns, generator)
    return _written(save_figure(figure, args.out), start)


def _trajectory(args: argparse.Namespace, count: int, images=None) -> list:
    """Every sampler step for `count` samples from the run (`diffkit.load`) or from the dataset's exact denoiser."""
    if args.ideal == (args.run is not None):
        raise DiffkitError("Give either a run directory or --ideal (the dataset's exact denoiser), not both.")
    if args.run is not None:
        import diffkit

        from diffkit.progress import run_steps

        bundle = diffkit.load(args.run)
        sampler, steps, *_ = bundle.settings(args.sampler, args.steps, args.spacing)  # for the progress bar
        return run_steps(bundle.sample_steps(count, sampler=sampler, steps=steps, spacing=args.spacing,
                                             seed=args.seed, label=args.label), total=steps + 1, keep_all=True)
    return _ideal_trajectory(args, count, images)


def _ideal_trajectory(args: argparse.Namespace, count: int, images=None) -> list:
    """Sampling steps with `empirical_oracle` over the dataset's images; x0 guesses clipped to [-1, 1]."""
    from diffkit.oracle import empirical_oracle
    from diffkit.progress import run_steps
    from diffkit.sampling import get_sampler, sample_steps
    from diffkit.schedule import make_schedule

    if args.label is not None:
        raise DiffkitError("--label needs a run of a class-conditional model; --ideal ignores classes.")
    if images is None:
        if args.dataset is None:
            raise DiffkitError("--ideal needs --dataset NAME: the images whose distribution it denoises.")
        images = _dataset_images(args)
    sampler = get_sampler(args.sampler)
    options = {"clip_x0": 1.0} if "clip_x0" in inspect.signature(sampler.run).parameters else {}
    schedule = make_schedule(args.schedule, args.T)
    steps = args.steps or sampler.recommended_steps
    return run_steps(sample_steps(empirical_oracle(images, schedule), schedule, (count, *images.shape[1:]),
                                  sampler=args.sampler, steps=steps, spacing=args.spacing or sampler.recommended_spacing,
                                  generator=_generator(args), **options), total=steps + 1, keep_all=True)


def run_trajectory(args: argparse.Namespace) -> int:
    """`diffkit viz trajectory`."""
    from diffkit.viz import save_animation, save_figure, trajectory_frames, trajectory_strip

    start = time.perf_counter()
    if args.samples < 1:
        raise DiffkitError(f"--samples must be at least 1, not {args.samples}.")
    steps = _trajectory(args, args.samples)
    _written(save_figure(trajectory_strip(steps, args.columns), args.out), start)
    if args.gif:
        _written(save_animation(trajectory_frames(steps, args.samples), args.gif), start)
    return 0


def run_map(args: argparse.Namespace) -> int:
    """`diffkit viz map`."""
    from diffkit.viz import fit_pixel_map, plot_pixel_map, project_trajectories, save_figure

    if args.space == "latent":
        return run_latent_map(args)
    start = time.perf_counter()
    images = _dataset_images(args)
    generator = _generator(args)
    if len(images) > args.count:
        images = images[torch.randperm(len(images), generator=generator)[: args.count]]
    pixel_map = fit_pixel_map(images, epochs=args.epochs, seed=args.seed)
    print(f"fitted PCA + UMAP on {len(images)} images in {time.perf_counter() - start:.1f} s")
    samples = paths = None
    if args.run is not None or args.ideal:
        steps = _trajectory(args, max(args.samples, args.trajectories), images)
        samples = pixel_map.project(steps[-1].x_t[: args.samples].clamp(-1, 1))
        paths = project_trajectories(pixel_map, steps, args.trajectories)
    title = f"{args.dataset}: {len(images)} images in pixel space (PCA 50 + UMAP), KDE contours"
    if samples is not None:
        title += f",\n{args.sampler} samples and their predicted-x0 paths"
    return _written(save_figure(plot_pixel_map(pixel_map, samples, paths, title=title), args.out), start)


def run_latent_map(args: argparse.Namespace) -> int:
    """`diffkit viz map RUN --space latent`: the dataset's latents mapped beside its pixels, with the run's samples
    and their predicted-x0 paths in both spaces (the same sampling run, decoded for the pixel map)."""
    import diffkit
    from diffkit.encoders import encode_dataset
    from diffkit.images import to_uint8
    from diffkit.viz import fit_pixel_map, plot_maps, project_trajectories, save_figure
    from diffkit.viz.pixelspace import MapPanel

    start = time.perf_counter()
    if args.run is None or args.ideal:
        raise DiffkitError("--space latent maps a latent model's latents; give its run directory (not --ideal).")
    bundle = diffkit.load(args.run)
    if bundle.encoder is None:
        raise DiffkitError(f"{args.run} is a pixel-space model, so it has no latents to map; drop --space latent.")
    args.size = args.size or bundle.config.data.size
    images = _dataset_images(args)
    if len(images) > args.count:
        images = images[torch.randperm(len(images), generator=_generator(args))[: args.count]]
    latents = encode_dataset(bundle.encoder, to_uint8(images))  # (N, c, h, w), on the bundle's measured scale
    maps = [fit_pixel_map(space, epochs=args.epochs, seed=args.seed) for space in (images, latents)]
    print(f"fitted PCA + UMAP on {len(images)} images and their latents in {time.perf_counter() - start:.1f} s")
    steps = _trajectory(args, max(args.samples, args.trajectories), images)
    last = steps[-1]
    panels = [MapPanel(maps[0], maps[0].project(last.x_t[: args.samples].clamp(-1, 1)),
                       project_trajectories(maps[0], steps, args.trajectories), "pixels (decoded samples)"),
              MapPanel(maps[1], maps[1].project(last.latent.x_t[: args.samples]),
                       project_trajectories(maps[1], steps, args.trajectories, latent=True),
                       f"latents {'x'.join(map(str, latents.shape[1:]))} (the denoiser's space)")]
    title = (f"{args.dataset}: {len(images)} images in pixel and latent space (PCA 50 + UMAP), KDE contours, "
             f"{args.sampler} samples and their predicted-x0 paths")
    return _written(save_figure(plot_maps(panels, title=title), args.out), start)


def run_toy(args: argparse.Namespace) -> int:
    """`diffkit viz toy2d`: train the toy model, report how close its samples are, draw it."""
    from diffkit.schedule import make_schedule
    from diffkit.viz import energy_distance, plot_toy, save_figure, toy_points, toy_trajectory, train_toy

    start = time.perf_counter()
    generator = _generator(args)
    schedule = make_schedule(args.schedule, args.T)
    data = toy_points(args.data, 4000, generator)
    held_out = toy_points(args.data, args.points, generator)
    fresh = toy_points(args.data, args.points, generator)  # a second real sample: the distance to aim for
    model, losses = train_toy(data, schedule, iterations=args.iterations, generator=generator)
    if args.score:
        return _score_picture(args, model, schedule, data, generator, start)
    # Clip x0 guesses to a little beyond the data's box, as images are clipped to [-1, 1].
    steps = toy_trajectory(model, schedule, args.points, sampler=args.sampler, steps=args.steps,
                           generator=generator, clip_x0=1.2 * float(data.abs().max()))
    print(f"trained in {time.perf_counter() - start:.1f} s, final loss {sum(losses[-100:]) / 100:.3f}; "
          f"energy distance to held-out points: samples {energy_distance(steps[-1].x_t, held_out):.4f}, "
          f"fresh data {energy_distance(fresh, held_out):.4f}")
    title = f"2-D toy diffusion: {args.data}, {args.schedule} schedule, {args.sampler} {args.steps} steps"
    return _written(save_figure(plot_toy(data, schedule, steps, generator=generator, title=title), args.out), start)


def _score_picture(args: argparse.Namespace, model, schedule, data, generator, start: float) -> int:
    """`diffkit viz toy2d --score`: learned vs exact score fields, and how well they agree on draws of q(x_t)."""
    from diffkit.viz import save_figure
    from diffkit.viz.score import agreement_by_level, exact_score, plot_score_fields, score_levels

    exact = exact_score(args.data, generator)
    levels = score_levels(schedule)
    agreement = agreement_by_level(model, schedule, exact, data[:2000], levels, generator)
    print("median cosine between learned and exact score on draws of q(x_t): " + ", ".join(
        f"t={int(schedule.timesteps[i])} {value:.3f}" for i, value in agreement.items()))
    reference = "exact" if args.data == "gaussians" else "a 20,000-point sample's"
    title = f"score of q(x_t) for {args.data}: learned (top) vs {reference} (bottom), {args.schedule} schedule"
    return _written(save_figure(plot_score_fields(model, schedule, exact, levels, data=data[:2000],
                                                        generator=generator, title=title), args.out), start)


def run_gaussian(args: argparse.Namespace) -> int:
    """`diffkit viz gaussian1d`."""
    from diffkit.viz import plot_gaussian_fit, save_figure

    start = time.perf_counter()
    figure, (mean, std) = plot_gaussian_fit(args.mean, args.std, args.count, _generator(args))
    print(f"maximum-likelihood fit: mean {mean:.4f}, std {std:.4f} (true {args.mean}, {args.std})")
    return _written(save_figure(figure, args.out), start)
